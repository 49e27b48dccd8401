"""Tools run as MCP tasks (protocol 2025-11-25, SEP-1686): a ``tools/call`` with a
``task`` parameter answers at once with a task id; the client follows the task's
status with ``tasks/get`` and fetches the tool's result with ``tasks/result``, which
also carries any question the server asks meanwhile (``input_required``). A call
given up (the caller barged in, hung up, the timeout ran out) sends ``tasks/cancel``,
so the server stops the work nobody will hear.

``McpConnection.call`` runs a tool this way when its definition says
``execution.taskSupport: required``, or ``optional`` and the server declares
``tasks.requests.tools.call``; serve's gateway lends such calls like any other
(the task lives on serve's connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import compat

if TYPE_CHECKING:
    from mcp import ClientSession
    from mcp.types import CallToolResult

log = logging.getLogger("voice_runtime.mcp")

# the server's pollInterval, clamped: never a busy loop, never deaf for long
POLL_MIN_S, POLL_MAX_S = 0.2, 5.0
POLL_DEFAULT_S = 1.0
# asked of the server: keep the task (and its result) this long after it was created
TTL_MS = 10 * 60 * 1000
CANCEL_WAIT_S = 5.0  # tasks/cancel sent after a call was given up: bounded, in the background
_cancelling: set[asyncio.Task[None]] = set()  # referenced until done (asyncio keeps weak ones)


def runs_as_task(tool: Any, capabilities: Any) -> bool:
    """``required``: only as a task. ``optional``: as a task where the server says it
    runs tool calls as tasks (a voice call gains the status lines and the cancel)."""
    support = getattr(getattr(tool, "execution", None), "task_support", None)
    if support == "required":
        return True
    return support == "optional" and declares_task_calls(capabilities)


def declares_task_calls(capabilities: Any) -> bool:
    """The server says it runs ``tools/call`` as tasks (``capabilities.tasks.requests.tools.call``);
    without it the spec forbids asking for a task."""
    requests = getattr(getattr(capabilities, "tasks", None), "requests", None)
    return getattr(getattr(requests, "tools", None), "call", None) is not None


async def call_as_task(session: ClientSession, server: str, tool: str, arguments: dict[str, Any], *,
                       alive: Callable[[], None], report: Callable[[str], None] | None) -> CallToolResult:
    """Create the task, follow it, return its result. ``alive`` is called at each sign
    of life (the caller's timeout restarts, up to its ceiling); ``report`` gets each
    new status message."""
    from mcp.types import CallToolResult, GetTaskRequest, GetTaskRequestParams, GetTaskResult, Task

    created = await compat.send_raw_request(
        session, "tools/call", {"name": tool, "arguments": arguments, "task": {"ttl": TTL_MS}})
    if not isinstance(created.get("task"), dict):
        # a server may run an `optional` tool at once and answer with its result
        return CallToolResult.model_validate(created)
    task: Any = Task.model_validate(created["task"])
    said: str | None = None
    try:
        while True:
            if task.status_message and task.status_message != said:
                said = task.status_message
                if report is not None:
                    report(said)
            if task.status != "working":
                break
            await asyncio.sleep(_poll_s(task.poll_interval))
            task = await session.send_request(
                GetTaskRequest(params=GetTaskRequestParams(task_id=task.task_id)), GetTaskResult)
            alive()  # the server answered about the task: it is still at it
        if task.status == "cancelled":
            return CallToolResult(content=[_text(f"the server cancelled the task{_said(task)}")], is_error=True)
        # completed and failed hand over the tool's result; input_required first
        # delivers the server's questions on this request (elicitation), then the result
        return await _result(session, task.task_id)
    except BaseException:
        _cancel_later(session, server, tool, task.task_id)
        raise


async def _result(session: ClientSession, task_id: str) -> CallToolResult:
    from mcp.types import CallToolResult, GetTaskPayloadRequest, GetTaskPayloadRequestParams

    return await session.send_request(
        GetTaskPayloadRequest(params=GetTaskPayloadRequestParams(task_id=task_id)), CallToolResult)


def _cancel_later(session: ClientSession, server: str, tool: str, task_id: str) -> None:
    """Tell the server the task is abandoned, without making the caller wait for it."""

    async def cancel() -> None:
        from mcp.types import CancelTaskRequest, CancelTaskRequestParams, CancelTaskResult

        try:
            async with asyncio.timeout(CANCEL_WAIT_S):
                await session.send_request(
                    CancelTaskRequest(params=CancelTaskRequestParams(task_id=task_id)), CancelTaskResult)
            log.info("MCP server %s: task of tool %s cancelled (the call was given up)", server, tool)
        except Exception as exc:  # noqa: BLE001 - already finished, or the server is gone
            log.info("MCP server %s: cancelling the task of tool %s failed (%s)", server, tool, type(exc).__name__)

    with contextlib.suppress(RuntimeError):  # no running loop: the connection is closing with it
        job = asyncio.get_running_loop().create_task(cancel())
        _cancelling.add(job)
        job.add_done_callback(_cancelling.discard)


def _poll_s(interval_ms: int | None) -> float:
    if interval_ms is None:
        return POLL_DEFAULT_S
    return min(POLL_MAX_S, max(POLL_MIN_S, interval_ms / 1000))


def _said(task: Any) -> str:
    return f": {task.status_message}" if task.status_message else ""


def _text(text: str) -> Any:
    from mcp.types import TextContent

    return TextContent(type="text", text=text)
