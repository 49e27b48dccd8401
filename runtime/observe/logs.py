"""Log output: one line per event, text for people or JSON for collectors.

Structured fields travel in ``extra=`` (``tool_call``, ``reload``, ``agent``...)
and become JSON keys. Every line passes through the process's ``SecretSet`` on its
way out: the libraries below us log URLs and headers (httpx logs every request
URL at info, the mcp SDK the endpoint it connects to), and a ``${VAR}`` value may
sit in either. JSON lines are redacted field by field before they are escaped,
then once more as a whole.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

from ..spec.secrets import SecretSet


class _Redacting(logging.Formatter):
    def __init__(self, inner: logging.Formatter, secrets: SecretSet) -> None:
        super().__init__()
        self.inner = inner
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return self.secrets.redact(self.inner.format(record))


_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _is_pii(key: str) -> bool:
    """livekit puts conversation content in ``lk.pii.*`` extras (a tool's error
    message as ``lk.pii.error``), out of the message so that it can be dropped: a
    call's content stays out of the log, as it stays out of livekit's spans."""
    return "pii" in key.split(".")


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: SecretSet | None = None) -> None:
        super().__init__()
        self.secrets = secrets if secrets is not None else SecretSet()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and not _is_pii(key):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        # redacted before json escapes them: "\u00e9" and "\"" are not the value's own text
        return self.secrets.dumps(out)


TEXT_FORMATS = {
    "text": "%(asctime)s %(levelname)s %(name)s: %(message)s",
    "short": "%(levelname)s %(name)s: %(message)s",  # one-shot commands: chat, call, check
}


class _StrayStdoutLines(logging.Filter):
    """The mcp SDK logs every line a stdio server prints that is not JSON-RPC (a
    banner, a debug print) at ERROR with a pydantic traceback: one line each, at
    WARNING, with the text; hidden where only errors are shown (``check``, whose
    report says whether the server works)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "mcp.client.stdio" or not record.exc_info \
                or not record.getMessage().startswith("Failed to parse JSONRPC"):
            return True
        errors = getattr(record.exc_info[1], "errors", None)
        try:
            line = str(errors()[0]["input"]) if callable(errors) else ""
        except (IndexError, KeyError, TypeError):
            line = ""
        record.msg, record.args = "an MCP server printed a line that is not JSON-RPC (ignored): %r", (line[:200],)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return record.levelno >= logging.getLogger().getEffectiveLevel()


class _TracebackOnce(logging.Filter):
    """livekit's log queue sends a job process's record to serve already formatted,
    its traceback inside the message, and keeps ``exc_text`` as well: every job's
    traceback was printed twice. The one in the message stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_text and not record.exc_info and record.exc_text in str(record.msg):
            record.exc_text = None
        return True


class _RedactRecord(logging.Filter):
    """Redacts a record's message before a handler passes it on: a job process's
    records travel to serve (livekit's log queue), whose own set never learns a
    call's values."""

    def __init__(self, secrets: SecretSet) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if self.secrets.might_hold(text):
            record.msg, record.args = self.secrets.redact(text), None
        return True


_learnt = SecretSet()


def add_secrets(values: Mapping[str, str]) -> None:
    """Values learnt while running (a call's secret context: value -> shown text),
    redacted from every record the root handlers pass from now on."""
    if not values:
        return
    _learnt.add(values)
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, _Redacting):
            handler.formatter.secrets.add(values)
        if not any(isinstance(f, _RedactRecord) for f in handler.filters):
            handler.addFilter(_RedactRecord(_learnt))


CHATTY_LOGGERS = ("livekit", "httpx", "httpx2", "httpcore", "watchfiles")


def setup_logging(fmt: str, level: str, secrets: SecretSet) -> None:
    """Log lines to stderr, redacted with ``secrets`` (which may grow later)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_StrayStdoutLines())
    handler.addFilter(_TracebackOnce())
    inner = JsonFormatter(secrets) if fmt == "json" else logging.Formatter(TEXT_FORMATS[fmt])
    handler.setFormatter(_Redacting(inner, secrets))
    logging.captureWarnings(True)  # warnings.warn text reaches stderr through the formatter
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # livekit's per-job chatter, a line per HTTP request (the HTTP clients under the
    # provider SDKs) and per file change seen (watchfiles; serve logs its reloads)
    # stay at warning unless asked for
    if root.level > logging.DEBUG:
        for chatty in CHATTY_LOGGERS:
            logging.getLogger(chatty).setLevel(max(root.level, logging.WARNING))
