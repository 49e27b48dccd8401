"""What a server says about a call while it runs (a progress notification's message,
a task's status message), handed to whoever speaks for the call: a filler with
``say_progress: true`` (``session/fillers.py``).

The listener rides in a context variable rather than through every ``call()``
signature: the call path crosses the tool plan, the pool and serve's gateway, and
only the speaking end cares. A listener is called in the loop that set it, whatever
loop the connection's transport lives in.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Iterator

Listener = Callable[[str], None]

_listener: contextvars.ContextVar[Listener | None] = contextvars.ContextVar("mcp_progress_listener", default=None)

# a status message longer than this is not a line to say (nor to carry across the gateway)
MAX_MESSAGE_CHARS = 300


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Calls started inside this block (and tasks created in it) report to ``listener``."""
    token = _listener.set(_in_this_loop(listener))
    try:
        yield
    finally:
        _listener.reset(token)


def current() -> Listener | None:
    return _listener.get()


def _in_this_loop(listener: Listener) -> Listener:
    loop = asyncio.get_running_loop()

    def tell(message: str) -> None:
        message = " ".join(message.split())[:MAX_MESSAGE_CHARS]
        if not message:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            listener(message)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(listener, message)

    return tell
