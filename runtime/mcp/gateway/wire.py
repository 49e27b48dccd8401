"""The gateway's wire protocol, shared by serve's side (``server``) and the job's side
(``client``): where serve writes the socket's address, the limits, and the status
of every answer.

One JSON object per line each way. A job connects, writes ``<token> <job id>\n``, then
sends ``{"id": n, "op": "acquire" | "call" | "prompt" | "resource" | "up" | "cancel", ...}``; each answer
carries the request's ``id`` and a ``status`` (``Status``), with ``"id": null`` for
the answer that refuses the connection itself. A ``call`` sent with ``"progress": true``
may be followed, before its answer, by ``{"id": n, "op": "progress", "message": ...}``
frames: the server's progress and task status lines, for a filler to speak. A ``call``
sent with ``"questions": true`` may be followed by ``{"id": n, "op": "question",
"question": ...}`` (the server asked, and its connection attributed the question to this
call): the job answers ``{"op": "answer", "id": n, "answer": {"action", "content"}}``, and
serve sends ``{"id": n, "op": "unasked"}`` when it stops waiting for that answer.
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any

ADDRESS_FILE = "gateway.json"
UP_WAIT_S = 30.0  # a long poll for a server to come back lasts at most this
CALL_MARGIN_S = 10.0  # a borrowed call gives up this long after the server's own max_timeout
TOKEN_WAIT_S = 5.0  # a connection must say the token this soon
MAX_JOB_ID = 256  # bytes of the job id a connection names after its token
SOCKET_PATH_MAX = 100  # bytes; a unix socket path holds at most 107
# one message per line: a tool result can be large (results are capped to the
# server's max_result_chars only in the job)
MAX_LINE_BYTES = 64 * 1024 * 1024


class Status(IntEnum):
    """The status of a gateway answer, named (the numbers are HTTP's, for whoever
    reads the wire)."""

    OK = 200
    NOT_UP = 204  # a long poll ended and the server is still down
    BAD_REQUEST = 400
    NOT_A_JOB = 401  # the token is not this serve's
    REFUSED = 403  # not this job's agent's to use, or no job serve routed
    UNKNOWN = 404  # serve no longer holds this server block (a newer generation)
    ERROR = 500
    RPC_ERROR = 502  # the server answered with a JSON-RPC error
    UNAVAILABLE = 503  # the server is down
    TIMEOUT = 504

    @classmethod
    def of(cls, value: Any) -> Status:
        """The status a message carries; anything else is an ``ERROR``."""
        try:
            return cls(int(value))
        except (TypeError, ValueError):
            return cls.ERROR


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"
