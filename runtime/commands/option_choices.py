"""The fixed choices of command-line options, as Enums: typer lists them in
``--help`` and refuses any other value with exit code 2. Each value is the word
the user types."""

from __future__ import annotations

from enum import Enum


class OutputFormat(str, Enum):
    """``--format`` of check, plugins and tools."""

    text = "text"
    json = "json"


class LogFormat(str, Enum):
    """``--log-format``: text for people, JSON lines for collectors."""

    text = "text"
    json = "json"


class LogLevel(str, Enum):
    """``--log-level``, lowest first."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


class ElicitChoice(str, Enum):
    """``--elicit`` of call: how a server's question is answered (there is no caller)."""

    ask = "ask"
    accept_defaults = "accept-defaults"
    decline = "decline"
