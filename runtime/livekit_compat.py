"""Every use of livekit-agents' or the mcp SDK's private parts, in one place.

pytest's ``_pytest/compat.py`` is the model: the rest of the package calls these
functions and never reads a private attribute of a livekit or mcp object (a test,
tests/test_livekit_compat.py, greps for it). Each function says what it relies on,
in which version it was read (livekit-agents 1.8.9, mcp 2.3.0), and what serve or
a session degrades to when that part is gone. The same test asserts that each part
still exists in the installed versions, so an upgrade fails there, loudly, instead
of degrading in production.

Nothing here imports livekit or mcp at module level: the CLI's light commands
import this module too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asyncio import Queue

# -- AgentServer's process pool (livekit/agents/worker.py, ipc/proc_pool.py) --------------


def _proc_pool(server: Any) -> Any:
    return getattr(server, "_proc_pool", None)


def job_executors(server: Any) -> list[Any]:
    """The job executors (processes or threads, idle or running a job) of an
    AgentServer: ``server._proc_pool.processes``. livekit has no public list.
    Degrades to ``[]``: a hurried stop then cannot kill job processes at once, and
    ``aclose()`` ends them only after livekit's own shutdown timeout."""
    return list(getattr(_proc_pool(server), "processes", None) or [])


def take_idle_executors(server: Any) -> list[Any]:
    """Remove the prewarmed, idle executors from an AgentServer's pool and return
    them (the caller closes them; livekit spawns fresh ones):
    ``server._proc_pool._warmed_proc_queue``. Degrades to ``[]``: idle processes
    then serve one more call each with an older warm-up (the spec itself is always
    read at job entry)."""
    queue: Queue[Any] | None = getattr(_proc_pool(server), "_warmed_proc_queue", None)
    if queue is None:
        return []
    idle = []
    while not queue.empty():
        idle.append(queue.get_nowait())
    return idle


def share_child_process_count(min_interval: float = 0.5) -> None:
    """Make livekit's process-wide child count refresh at most once per
    ``min_interval`` for all AgentServers of this process together: every server
    calls ``livekit.agents.telemetry.metrics._update_child_proc_count`` (looked up
    on the module at each call, worker.py) every 0.5 s, and each call walks /proc.
    Idempotent. Degrades to no change: each server walks /proc on its own (with
    1,000 agents, ~60 % of a core)."""
    from livekit.agents.telemetry import metrics as livekit_metrics

    update = getattr(livekit_metrics, "_update_child_proc_count", None)
    if update is None or getattr(update, "shared_by_voice_runtime", False):
        return
    lock, last = threading.Lock(), [float("-inf")]

    def shared() -> None:
        with lock:
            now = time.monotonic()
            if now - last[0] < min_interval:
                return
            last[0] = now
        update()

    shared.shared_by_voice_runtime = True  # type: ignore[attr-defined]
    livekit_metrics._update_child_proc_count = shared


# -- function tools (livekit/agents/llm/tool_context.py) ---------------------------------


def tool_function(tool: Any) -> Callable[..., Any]:
    """The undecorated function of a livekit ``FunctionTool``: ``tool._func``. Its
    signature is what livekit parses a call's arguments with, so a wrapper made with
    ``functools.wraps`` must wrap this, not the tool. Degrades to the tool itself,
    which is callable (direct calls still work) but has no usable signature."""
    return getattr(tool, "_func", tool)


# -- AgentSession (livekit/agents/voice/agent_session.py, agent_activity.py) -------------


def session_with_error_hook() -> type:
    """An ``AgentSession`` subclass that asks ``self.on_session_error(error)``
    first about each error; True means handled, and livekit's own handling (which
    closes the session on an unrecoverable error) is skipped. It overrides the
    private ``AgentSession._on_error``. Degrades to a plain AgentSession (the hook is
    never asked): a failing realtime model then closes the session as livekit does,
    with no fallback to the pipeline."""
    from livekit.agents import AgentSession

    class HookedSession(AgentSession):  # type: ignore[misc]
        def on_session_error(self, error: Any) -> bool:
            return False

        def _on_error(self, error: Any) -> None:
            if not self.on_session_error(error):
                super()._on_error(error)

    if not callable(getattr(AgentSession, "_on_error", None)):
        return AgentSession
    return HookedSession


def _activity(session: Any) -> Any:
    return getattr(session, "_activity", None)


def active_agent(session: Any) -> Any:
    """The agent of the session's current activity (``session._activity.agent``):
    livekit swaps activities in a background task and has no public signal for
    "the new agent is live". Degrades to None: the caller waits for its timeout."""
    return getattr(_activity(session), "agent", None)


def realtime_session(session: Any) -> Any:
    """The realtime model session of the session's current activity
    (``session._activity.realtime_llm_session``). Degrades to None: a realtime
    session that re-raises on close is then not quietened before a swap."""
    return getattr(_activity(session), "realtime_llm_session", None)


# -- the mcp SDK's stdio transport (mcp/client/stdio.py) --------------------------------


def stdio_text_stream() -> type:
    """The text stream class ``stdio_client`` reads a server's stdout through:
    ``mcp.client.stdio.TextReceiveStream`` (anyio's, imported into the SDK's module
    and looked up there at each connection)."""
    import mcp.client.stdio as sdk

    return sdk.TextReceiveStream  # type: ignore[no-any-return]


def set_stdio_text_stream(cls: type) -> None:
    """Make ``stdio_client`` read through ``cls``. Degrades to nothing when the SDK
    no longer reads through that name: a huge line is then read in quadratic time
    and without a size bound."""
    import mcp.client.stdio as sdk

    sdk.TextReceiveStream = cls  # type: ignore[misc,assignment]
