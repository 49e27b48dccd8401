"""serve's warm MCP connections, lent to its job processes over a unix socket.

Without this every job process connected its agent's MCP servers itself: one
server process per (job process x agent), and a call landing on a process that
had warmed another agent paid the handshake on the caller's time. Now the serve
process keeps one connection per distinct server block (``McpPool``), and a job
process reaches it through the ``Gateway``: ``GatewayPool.acquire`` is one local
request (the tools of every server, as listed), a tool call one more (about 0.15 ms
on top of the call; HTTP cost 0.3-1 ms). A server
block with ``shared: false`` is never lent: each call connects its own.

The socket lives in serve's private state folder (0700) and every connection starts
with a per-serve token (``gateway.json``, 0600): nothing but serve's own job processes
can use the connections, whose headers and environment hold secrets. The token is
shared by every job, so it says nothing about which agent a job runs: serve binds
each connection to the job of the process at the other end (the kernel's
SO_PEERCRED pid, which code in the job cannot choose, must be the process serve
launched that job on) and to the agent serve itself routed that job to. The
connection may then use only that agent's server blocks and those of the agents it
can hand off to, and call only the tools that agent's tool plan shows its model
(``allowed_tools``, the tool lock and ``pin_tools``, withheld tools); anything else
is refused with a 403 that the job reports as the tool being unavailable, logged
(never with its arguments) and counted in ``voice_runtime_gateway_refused_total``.

A key the pool no longer holds (the spec changed and the old server block was
closed while a call of the older generation still runs) is answered 404; the
job then connects that block itself, so a call keeps the generation it started
with, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets as token_source
import socket
import struct
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.filesystem import write_private_json
from .. import elicitation, progress
from ..connection import ConnState, McpUnavailable
from .wire import (
    ADDRESS_FILE,
    MAX_JOB_ID,
    MAX_LINE_BYTES,
    SOCKET_PATH_MAX,
    TOKEN_WAIT_S,
    UP_WAIT_S,
    Status,
    encode,
)

if TYPE_CHECKING:
    from ...spec.loader import LoadedSpec
    from ..connection import McpConnection
    from ..elicitation import Answer, Question
    from ..pool import McpPool

log = logging.getLogger("voice_runtime.mcp")


def _tool_dumps(conn: McpConnection) -> list[dict[str, Any]]:
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in conn.tools]


def peer_pid(writer: asyncio.StreamWriter) -> int | None:
    """The pid of the process at the other end of a unix socket, as the kernel
    recorded it when that process connected; None where SO_PEERCRED is missing."""
    sock = writer.get_extra_info("socket")
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None:
        return None
    try:
        pid, _uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    except OSError:
        return None
    return pid or None


@dataclass
class _Binding:
    """What one job connection may use: the agent serve routed the job to, and the
    specs of every agent the call can reach by handoffs, as serve accepted them when
    the job connected (later generations are added: the job reads its specs once)."""

    job_id: str
    agent: str
    specs: dict[str, list[LoadedSpec]] = field(default_factory=dict)  # agent -> its generations seen
    owners: dict[str, set[str]] = field(default_factory=dict)  # block key -> agents whose spec has it
    keys: dict[int, dict[str, str]] = field(default_factory=dict)  # id(spec) -> its shared servers' keys

    def add(self, loaded: LoadedSpec) -> None:
        from ..pool import server_key

        seen = self.specs.setdefault(loaded.name, [])
        if any(s is loaded for s in seen):
            return
        seen.append(loaded)
        keys = self.keys[id(loaded)] = {name: server_key(loaded, name)
                                        for name, server in loaded.spec.mcp_servers.items() if server.pooled}
        for key in keys.values():
            self.owners.setdefault(key, set()).add(loaded.name)


def _describe(conn: McpConnection) -> dict[str, Any]:
    return {"known": True, "state": conn.state.value, "error": conn.error, "tools": _tool_dumps(conn),
            "rejected": [r.as_dict() for r in conn.rejected], "pinned": conn.pins.pinned, "changed": conn.pins.changed,
            # the job plans task-only tools by the server's tasks capability
            "capabilities": None if conn.capabilities is None else conn.capabilities.model_dump(
                mode="json", by_alias=True, exclude_none=True)}


async def _answered(conn: McpConnection, request: Any, answer: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Await a request to ``conn`` and word its outcome for the job: ``answer(result)``
    with OK, or the status of its failure (the job raises what its own connection would)."""
    from mcp.shared.exceptions import MCPError

    from ..toolset import SAID_CHARS, cap_text

    try:
        result = await request
    except McpUnavailable as exc:
        return {"status": Status.UNAVAILABLE, "unavailable": str(exc)}
    except asyncio.TimeoutError as exc:
        return {"status": Status.TIMEOUT, "timeout": str(exc) or True}
    except asyncio.CancelledError:
        raise
    except MCPError as exc:  # the server's JSON-RPC error, for the job to word as its own call does
        return {"status": Status.RPC_ERROR, "rpc_error": {"code": exc.code, "message": cap_text(exc.message, SAID_CHARS)}}
    except Exception as exc:  # noqa: BLE001 - the job reports it as the tool's failure
        return {"status": Status.ERROR, "error": f"{type(exc).__name__}: {conn.redact(str(exc))}"}
    return {"status": Status.OK, **answer(result)}


PROGRESS_FRAMES_PER_S = 10


def _unask(asked: dict[Any, asyncio.Future[Answer]], rid: Any) -> None:
    """Call ``rid`` ended (or its job went away) with its question unanswered: the server gets cancel."""
    from ..elicitation import Answer

    waiting = asked.pop(rid, None)
    if waiting is not None and not waiting.done():
        waiting.set_result(Answer("cancel", reason="the call ended"))


class Gateway:
    """The serve side: a unix-socket server over serve's pool. ``spec_of(agent)`` is
    the agent's accepted spec now, so a job of a new spec can have its servers
    connected on first use (serve warms them on reload).

    The protocol is one JSON object per line on one connection per job: the first
    line is the token; then requests ``{"id", "op", ...}`` (``acquire``, ``call``,
    ``up``) answered by ``{"id", "status", ...}`` in any order, and ``{"op":
    "cancel", "id"}`` cancels a request (the caller interrupted: the SDK then
    cancels the call on the MCP server). HTTP cost each call 0.3-1 ms more."""

    def __init__(self, pool: McpPool, state_dir: Path, spec_of: Callable[[str], LoadedSpec | None],
                 job_agent: Callable[[int | None, str], str | None]) -> None:
        """``job_agent(pid, job_id)``: the agent serve routed that job to, if the process
        ``pid`` runs it (None: a process that runs no job of this serve)."""
        self.pool = pool
        self.state_dir = state_dir
        self.spec_of = spec_of
        self.job_agent = job_agent
        self.refused: Counter[tuple[str, str]] = Counter()  # (agent, reason) -> requests refused
        # id(spec) -> (spec, what its plan was made of, block key -> tools shown): one plan per
        # spec version for all its jobs, remade when a listing, a pin or the tool lock changes
        self._plans: dict[int, tuple[LoadedSpec, Any, dict[str, set[str]]]] = {}
        self.token = token_source.token_urlsafe(32)
        self._server: asyncio.AbstractServer | None = None
        self._socket_dir: str | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._running: list[dict[Any, asyncio.Task[None]]] = []  # per job connection: request id -> its task
        self.path = ""

    @property
    def requests_in_flight(self) -> int:
        return sum(len(running) for running in self._running)

    async def start(self) -> None:
        path = str(self.state_dir / "mcp.sock")
        if len(os.fsencode(path)) > SOCKET_PATH_MAX:  # a long TMPDIR: a short private folder instead
            self._socket_dir = tempfile.mkdtemp(prefix="vr-", dir="/tmp")
            path = os.path.join(self._socket_dir, "mcp.sock")
        self._server = await asyncio.start_unix_server(self._serve, path, limit=MAX_LINE_BYTES)
        os.chmod(path, 0o600)
        self.path = path
        write_private_json(self.state_dir / ADDRESS_FILE, {"socket": path, "token": self.token})

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        if self._socket_dir is not None:
            import shutil

            shutil.rmtree(self._socket_dir, ignore_errors=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(asyncio.current_task())  # type: ignore[arg-type]
        running: dict[Any, asyncio.Task[None]] = {}
        asked: dict[Any, asyncio.Future[Answer]] = {}  # call id -> the server's question put to the job
        self._running.append(running)
        # the blocks this job borrowed: a block a spec edit replaced stays open for the
        # calls of the older generation still using it (McpPool.lend / release)
        leased: set[str] = set()
        try:
            binding = await self._bind(reader, writer)
            if binding is None:
                return
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                except ValueError:
                    request = None
                if not isinstance(request, dict) or not isinstance(request.get("id"), (int, str, type(None))):
                    writer.write(encode({"id": None, "status": Status.BAD_REQUEST, "error": "one JSON object per line, "
                                                                              "with a number or string id"}))
                    continue
                if request.get("op") == "cancel":
                    task = running.get(request.get("id"))
                    if task is not None:
                        task.cancel()
                    continue
                if request.get("op") == "answer":  # the job's caller answered the question of its call ``id``
                    from ..elicitation import Answer

                    waiting = asked.get(request.get("id"))
                    if waiting is not None and not waiting.done():
                        waiting.set_result(Answer.from_wire(request.get("answer")))
                    continue
                rid = request.get("id")
                task = asyncio.ensure_future(self._answer(request, writer, leased, binding, asked))
                running[rid] = task
                task.add_done_callback(lambda _t, rid=rid: (running.pop(rid, None), _unask(asked, rid)))
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # the job went away (or sent a line over the limit): its calls end with it
        except asyncio.CancelledError:
            pass  # serve is closing the gateway (asyncio's stream callback logs a handler that raises)
        finally:
            for task in list(running.values()):
                task.cancel()  # a job that ended mid-call: the calls to its servers are cancelled
            for rid in list(asked):
                _unask(asked, rid)
            self._running.remove(running)
            writer.close()
            if self._server is not None and self._server.is_serving():  # not when serve stops
                for key in leased:  # the call ended: blocks only it still used can close now
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await self.pool.release(key)
            self._clients.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _bind(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Binding | None:
        """The first line, ``<token> <job id>``: the token proves a job process of this
        serve, and the job is the one serve launched on the process at the other end."""
        try:  # exactly the token's length and a space, soon: nothing else is buffered first
            first = await asyncio.wait_for(reader.readexactly(len(self.token) + 1), TOKEN_WAIT_S)
            job_id = (await asyncio.wait_for(reader.readuntil(b"\n"), TOKEN_WAIT_S))[:-1]
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            first, job_id = b"", b""
        if first[:-1].decode(errors="replace") != self.token or first[-1:] != b" ":
            writer.write(encode({"id": None, "status": Status.NOT_A_JOB, "error": "not one of this serve's job processes"}))
            return None
        pid = peer_pid(writer)
        job = job_id.decode(errors="replace")[:MAX_JOB_ID]
        agent = self.job_agent(pid, job) if 0 < len(job_id) <= MAX_JOB_ID else None
        if agent is None:
            self._count("", "unbound")
            log.warning("MCP gateway: refused a connection from process %s naming job %r: serve runs no such "
                        "job on that process", pid, job[:80])
            writer.write(encode({"id": None, "status": Status.REFUSED, "error": "this process runs no job serve routed"}))
            return None
        binding = _Binding(job, agent)
        self._reach(binding)
        return binding

    def _reach(self, binding: _Binding) -> None:
        """Add the agent's spec as accepted now, and those of every agent it can hand off to."""
        from ...spec.handoffs import reachable

        start = self.spec_of(binding.agent)
        if start is not None:
            for loaded in reachable(start, self.spec_of).values():
                binding.add(loaded)

    def _count(self, agent: str, reason: str) -> None:
        self.refused[(agent, reason)] += 1

    def _refuse(self, binding: _Binding, reason: str, why: str) -> dict[str, Any]:
        """A typed refusal, logged without the call's arguments and counted."""
        self._count(binding.agent, reason)
        log.warning("MCP gateway: job %s (agent %s): %s", binding.job_id, binding.agent, why,
                    extra={"job_id": binding.job_id, "agent": binding.agent, "refused": reason})
        return {"status": Status.REFUSED, "refused": why}

    def _owners(self, binding: _Binding, key: str) -> set[str]:
        """The agents of this call whose spec has this block; a spec accepted since
        the job connected is looked at before refusing (the job may have read it)."""
        owners = binding.owners.get(key)
        if not owners:
            self._reach(binding)
            owners = binding.owners.get(key)
        return owners or set()

    def _shown_tools(self, binding: _Binding, key: str) -> set[str]:
        """The tools of this block the call's model is shown, by the plan of each of
        its agents with the block."""
        shown: set[str] = set()
        for agent in self._owners(binding, key):
            for loaded in binding.specs.get(agent, []):
                servers = binding.keys[id(loaded)]
                if key in servers.values():
                    shown |= self._plan(loaded, servers).get(key, set())
        return shown

    def _plan(self, loaded: LoadedSpec, servers: dict[str, str]) -> dict[str, set[str]]:
        """block key -> the tools the spec's plan shows its model: toolset.plan_tools over
        serve's connections with the spec's tool lock, as a job makes it."""
        from ..pins import read_tool_lock, tool_lock_path
        from ..toolset import plan_tools

        conns = {name: c for name, k in servers.items() if (c := self.pool.connection(k)) is not None}
        try:
            st = os.stat(tool_lock_path(loaded))
            lock_stamp: Any = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            lock_stamp = None
        made_of = (lock_stamp, tuple((id(c), id(c.tools), c.pins.pinned is None, tuple(c.pins.changed))
                                     for c in conns.values()))
        cached = self._plans.get(id(loaded))
        if cached is not None and cached[0] is loaded and cached[1] == made_of:
            return cached[2]
        if len(self._plans) > 4096:  # one per spec version in use; old versions go
            self._plans.clear()
        plan = plan_tools(conns, lock=read_tool_lock(loaded) if lock_stamp is not None else None)
        tools: dict[str, set[str]] = {}
        for tool in plan.mcp:
            tools.setdefault(servers[tool.server], set()).add(tool.tool.name)
        self._plans[id(loaded)] = (loaded, made_of, tools)
        return tools

    async def _answer(self, request: dict[str, Any], writer: asyncio.StreamWriter, leased: set[str],
                      binding: _Binding, asked: dict[Any, asyncio.Future[Answer]]) -> None:
        op = request.get("op")
        try:
            if op == "acquire":
                answer = await self._acquire(request, leased, binding)
            elif op == "call":
                with contextlib.ExitStack() as stack:
                    if request.get("progress") is True:
                        stack.enter_context(progress.listening(self._relay_progress(request.get("id"), writer)))
                    if request.get("questions") is True:
                        stack.enter_context(elicitation.asking(self._job_elicitor(request.get("id"), writer, asked)))
                    answer = await self._call(request, binding)
            elif op == "up":
                answer = await self._up(request, binding)
            elif op in ("prompt", "resource"):
                answer = await self._fetch(op, request, binding)
            else:
                answer = {"status": Status.BAD_REQUEST, "error": f"unknown op {str(op)[:40]!r}"}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the job reports it as the tool's failure
            answer = {"status": Status.ERROR, "error": f"{type(exc).__name__}"}
        if not writer.is_closing():
            writer.write(encode({"id": request.get("id"), **answer}))

    @staticmethod
    def _relay_progress(rid: Any, writer: asyncio.StreamWriter) -> Callable[[str], None]:
        """The job speaks the server's progress and task status lines (filler
        say_progress): each goes back as a frame with the call's id."""
        last: list[Any] = [None, float("-inf")]  # the message sent last, and when

        def tell(message: str) -> None:
            # a server may send thousands a second: the job says one every few
            # seconds, so only a changed message, at most PROGRESS_FRAMES_PER_S
            now = asyncio.get_running_loop().time()
            if writer.is_closing() or message == last[0] or now - last[1] < 1 / PROGRESS_FRAMES_PER_S:
                return
            last[:] = [message, now]
            writer.write(encode({"id": rid, "op": "progress", "message": message}))

        return tell

    @staticmethod
    def _job_elicitor(rid: Any, writer: asyncio.StreamWriter,
                      asked: dict[Any, asyncio.Future[Answer]]) -> elicitation.Elicitor:
        """Who answers a question the server asks during the job's call ``rid``: the job's
        caller, over this connection (a ``question`` frame; the job sends an ``answer``).
        The shared connection attributed the question to this call (``Callers``)."""
        from ..elicitation import Answer

        async def ask(question: Question) -> Answer:
            if writer.is_closing() or rid in asked:
                return Answer("cancel", reason="the call's process is gone" if writer.is_closing()
                              else "the call already has a question waiting")
            waiting = asked[rid] = asyncio.get_running_loop().create_future()
            writer.write(encode({"id": rid, "op": "question", "question": question.as_wire()}))
            try:
                return await waiting
            except asyncio.CancelledError:  # elicitation_timeout, or the call ended: the job stops asking
                if not writer.is_closing():
                    writer.write(encode({"id": rid, "op": "unasked"}))
                raise
            finally:
                asked.pop(rid, None)

        return elicitation.in_loop(asyncio.get_running_loop(), ask)

    # -- requests --------------------------------------------------------------------

    async def _acquire(self, body: dict[str, Any], leased: set[str], binding: _Binding) -> dict[str, Any]:
        """{agent, servers: {name: key}} -> each server's state and tools; keys the
        pool lacks are connected first if they belong to the agent's current spec.
        A block none of the call's agents has is refused (``refused``), never lent."""
        wanted = body.get("servers")
        if not isinstance(wanted, dict) or not all(isinstance(v, str) for v in wanted.values()):
            return {"status": Status.BAD_REQUEST, "error": '"servers" must map server names to keys'}
        servers: dict[str, Any] = {}
        for name, key in wanted.items():
            if not self._owners(binding, key):
                refusal = self._refuse(binding, "block", f"MCP server {str(name)[:64]!r} is not a server of agent "
                                                         f"{binding.agent} or of an agent it hands off to")
                servers[name] = {"known": False, "refused": refusal["refused"]}
        wanted = {name: key for name, key in wanted.items() if name not in servers}
        agent = str(body.get("agent", ""))
        if any(self.pool.connection(key) is None for key in wanted.values()):
            loaded = self.spec_of(agent) if agent in binding.specs else None
            if loaded is not None:
                await self.pool.warm([loaded])  # its shared blocks only: never a call's own
        else:
            await self.pool.started(wanted.values())
        for name, key in wanted.items():
            conn = self.pool.connection(key)
            servers[name] = _describe(conn) if conn is not None else {"known": False}
            if conn is not None and key not in leased:
                leased.add(key)
                self.pool.lend(key)
        return {"status": Status.OK, "servers": servers}

    def _lent(self, binding: _Binding, key: str, doing: str) -> McpConnection | dict[str, Any]:
        """The connection of block ``key`` for this job, or the answer instead: refused
        (not its agent's, nor of an agent it hands off to) or unknown (serve no longer
        holds it)."""
        if not self._owners(binding, key):
            return self._refuse(binding, "block", f"{doing} on an MCP server block that is not agent "
                                                  f"{binding.agent}'s or of an agent it hands off to")
        conn = self.pool.connection(key)
        if conn is None:
            return {"status": Status.UNKNOWN, "unknown": True}
        return conn

    async def _call(self, body: dict[str, Any], binding: _Binding) -> dict[str, Any]:
        tool, arguments = body.get("tool"), body.get("arguments") or {}
        if not isinstance(tool, str) or not isinstance(arguments, dict):
            return {"status": Status.BAD_REQUEST, "error": '"tool" must be a name and "arguments" an object'}
        key = str(body.get("key", ""))
        conn = self._lent(binding, key, "a tool call")
        if isinstance(conn, dict):
            return conn
        if tool not in self._shown_tools(binding, key):
            return self._refuse(binding, "tool", f"tool {tool[:64]!r} of MCP server {conn.name} is not one "
                                                 f"agent {binding.agent}'s model is shown (allowed_tools, "
                                                 "the tool lock or pin_tools withhold it)")
        from ..results import cap_text, result_text

        # the result as the job will use it: its text, capped here to the server's
        # max_result_chars (a 30 MB result must not cross, nor fill, the socket)
        return await _answered(conn, conn.call(tool, arguments), lambda result: {
            "text": cap_text(result_text(result), conn.server.max_result_chars), "is_error": bool(result.is_error)})

    async def _fetch(self, op: str, body: dict[str, Any], binding: _Binding) -> dict[str, Any]:
        """A prompt (``{key, name, arguments}``) or resource (``{key, uri}``) for a call's
        instructions: from the same warm connection its tools use."""
        name, arguments = body.get("name" if op == "prompt" else "uri"), body.get("arguments") or {}
        if not isinstance(name, str) or not isinstance(arguments, dict) \
                or not all(isinstance(v, str) for v in arguments.values()):
            return {"status": Status.BAD_REQUEST, "error": f"a {op} needs a name or uri and string arguments"}
        conn = self._lent(binding, str(body.get("key", "")), f"a {op}")
        if isinstance(conn, dict):
            return conn
        from ...spec.mcp_context import MAX_PROMPT_CHARS, MAX_RESOURCE_CHARS
        from ..results import cap_text

        fetched = conn.get_prompt(name, arguments) if op == "prompt" else conn.read_resource(name)
        return await _answered(conn, fetched, lambda text: {
            "text": cap_text(text, MAX_PROMPT_CHARS if op == "prompt" else MAX_RESOURCE_CHARS)})

    async def _up(self, body: dict[str, Any], binding: _Binding) -> dict[str, Any]:
        """A long poll: answers once the server is up (with its tools), or 204."""
        conn = self._lent(binding, str(body.get("key", "")), "waiting")
        if isinstance(conn, dict):
            return conn
        if conn.state is not ConnState.UP:
            came = asyncio.Event()
            loop = asyncio.get_running_loop()

            def back(_: Any) -> None:
                loop.call_soon_threadsafe(came.set)

            conn.on_up.append(back)
            try:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(came.wait(), timeout=UP_WAIT_S)
            finally:
                with contextlib.suppress(ValueError):
                    conn.on_up.remove(back)
        if conn.state is not ConnState.UP:
            return {"status": Status.NOT_UP}
        return {"status": Status.OK, **_describe(conn)}


