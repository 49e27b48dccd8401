"""Log output: one line per event, text for people or JSON for collectors.

Structured fields travel in ``extra=`` (``tool_call``, ``reload``, ``agent``...)
and become JSON keys. Every line passes through ``redact`` on its way out: the
libraries below us log URLs and headers at debug level (the mcp SDK logs the
endpoint it connects to), and a ``${VAR}`` value may sit in either.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .spec.loader import LoadedSpec

_SECRETS: dict[str, str] = {}  # value -> the ${VAR} text shown instead


def register_secrets(specs: Iterable[LoadedSpec]) -> None:
    """Values that came from ``${VAR}`` in these specs never reach a log line."""
    from .summary import expanded_values

    for loaded in specs:
        _SECRETS.update(expanded_values(loaded))


def redact(text: str) -> str:
    for value in sorted(_SECRETS, key=len, reverse=True):
        if value in text:
            text = text.replace(value, _SECRETS[value])
    return text


class _Redacting(logging.Formatter):
    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


TEXT_FORMATS = {
    "text": "%(asctime)s %(levelname)s %(name)s: %(message)s",
    "short": "%(levelname)s %(name)s: %(message)s",  # one-shot commands: chat, call, check
}


def setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    inner = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMATS[fmt])
    handler.setFormatter(_Redacting(inner))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # livekit's per-job chatter stays at warning unless asked for
    if root.level > logging.DEBUG:
        logging.getLogger("livekit").setLevel(max(root.level, logging.WARNING))
