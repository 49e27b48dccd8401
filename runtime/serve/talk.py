"""Browser calls: talk to any served agent from a page of serve's operator port,
with no LiveKit server.

- ``GET /talk`` lists the agents; ``GET /talk/<agent>`` is the page
  (talk_page.html: microphone, playback, transcript, tool calls, a text box; no
  external asset). An unknown agent is a 404 naming those that exist; an agent
  whose provider keys are missing says which before any call.
- ``POST /talk/<agent>/calls`` reserves a call: 429 with the reason beyond
  ``--max-browser-calls`` (reserved and running together), else the path of its
  WebSocket, which must be opened within TICKET_S.
- ``GET /talk/<agent>/calls/<id>`` (WebSocket) is the call. serve launches a job
  like any other (a fake job from the shared pool, as ``POST /simulate`` does)
  whose room metadata names serve's unix socket for browser calls and a token
  for this call; the job connects and says the token, and serve then relays
  frames between the page and the job without reading the audio
  (browser_audio.py). The call ends when either side closes, or after
  ``--max-call-seconds``.

Once serve is stopping (its first stop signal: it drains the calls in progress),
the page, a reservation and a call's WebSocket are 503 with Retry-After, saying
so: calls in progress go on until they end or the drain does.

Who may call: browser calls spend the operator's provider keys, so only loopback
peers, unless ``--talk-from`` names networks; a peer from those must give the
``--talk-token`` (``Authorization: Bearer`` or ``?token=``, which is how a page
and its WebSocket carry it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import secrets as token_source
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..session.browser_audio import AUDIO, INPUT_RATE, MESSAGE, OUTPUT_RATE, FrameError, frame, read_frame

if TYPE_CHECKING:
    from aiohttp import web

    from ..spec.secrets import SecretSet
    from ..spec.loader import LoadedSpec
    from .options import TalkOptions

log = logging.getLogger("voice_runtime.talk")

ROOM_PREFIX = "talk-"
TICKET_S = 30.0  # a reserved call must open its WebSocket this soon
JOB_CONNECT_S = 90.0  # a job process spawned and warmed for the call (about 3 s here; more on a busy machine)
TOKEN_WAIT_S = 5.0  # a connection to the socket must say its call's token this soon
MAX_WS_MESSAGE = 64 * 1024  # 10 ms of 16 kHz audio is 320 bytes; a typed turn at most 4,000 characters
SOCKET_PATH_MAX = 100  # bytes; a unix socket path holds at most 107
LOUD = 0.05  # a microphone frame with a sample above this is the caller speaking (the page's timing marks)
PAGE = Path(__file__).with_name("talk_page.html")
STOPPING = ("serve is stopping: the calls in progress may finish, and no new call starts here. "
            "Try again in a moment, once serve is back, or call another replica")
STOPPING_RETRY_AFTER = "10"  # seconds: a restarted serve (or another replica) takes calls by then


@dataclass
class _Ticket:
    agent: str
    expires: float
    socket_path: str = ""
    # the call's context from the page's query (/talk/<agent>?customer_id=...), checked at reserve
    context: dict[str, str] | None = None


@dataclass
class _Joined:
    """A job's connection for one call; the socket handler holds it open until ``done``."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Talk:
    """The /talk routes and the unix socket job processes of browser calls connect to."""

    def __init__(self, options: TalkOptions, state_dir: Path, *, serving: Callable[[], list[str]],
                 spec_of: Callable[[str], LoadedSpec | None], registry: Callable[[], Any],
                 launch: Callable[[str, str, str], Awaitable[None]], secrets: SecretSet,
                 stopping: Callable[[], bool]) -> None:
        self.options = options
        self.state_dir = state_dir
        self.serving, self.spec_of, self.registry, self.launch = serving, spec_of, registry, launch
        self.stopping = stopping  # serve's first stop signal came: it drains and starts no call
        self.secrets = secrets
        self.tickets: dict[str, _Ticket] = {}
        self.calls: set[asyncio.Task[Any]] = set()  # the WebSocket handlers of calls in progress
        self.waiting: dict[str, asyncio.Future[_Joined]] = {}  # call token -> the job's connection
        self.path = ""
        self._server: asyncio.AbstractServer | None = None
        self._socket_dir: str | None = None
        self._networks = [ipaddress.ip_network(n, strict=False) for n in options.allow_from]

    # -- the job processes' socket ------------------------------------------------------

    async def start(self) -> None:
        path = str(self.state_dir / "talk.sock")
        if len(os.fsencode(path)) > SOCKET_PATH_MAX:  # a long TMPDIR (see mcp/gateway.py)
            self._socket_dir = tempfile.mkdtemp(prefix="vr-talk-", dir="/tmp")
            path = os.path.join(self._socket_dir, "talk.sock")
        self._server = await asyncio.start_unix_server(self._joined, path)
        os.chmod(path, 0o600)
        self.path = path

    async def aclose(self) -> None:
        for task in list(self.calls):
            task.cancel()
        if self._server is not None:
            self._server.close()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    async def _joined(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            token = (await asyncio.wait_for(reader.readline(), TOKEN_WAIT_S)).strip().decode(errors="replace")
        except (TimeoutError, ConnectionError, ValueError):
            writer.close()
            return
        waiting = self.waiting.get(token)
        if waiting is None or waiting.done():
            log.warning("a connection to the browser-call socket named no call waiting for its job")
            writer.close()
            return
        joined = _Joined(reader, writer)
        waiting.set_result(joined)
        try:
            await joined.done
        finally:
            writer.close()

    # -- who may call ----------------------------------------------------------------------

    def refusal(self, request: web.Request) -> str | None:
        """Why this peer may not make browser calls; None when it may."""
        from .peers import bearer_token, is_loopback, peer_ip

        if is_loopback(request):
            return None
        how = ("start serve with --talk-from NETWORKS --talk-token '${VAR}' to accept callers from other hosts")
        if not self._networks:
            return f"browser calls are accepted from this machine only (a loopback address); {how}"
        ip = peer_ip(request)
        if ip is None or not any(ip in network for network in self._networks):
            return f"{ip} is not in the networks --talk-from allows"
        given = bearer_token(request, query=True)
        assert self.options.token is not None  # the CLI requires it with --talk-from
        if not given or not hmac.compare_digest(given.encode(), self.options.token.encode()):
            return f"browser calls from other hosts need the bearer token of {self.options.token_name} " \
                   "(Authorization: Bearer <token>, or ?token=<token> on the page's URL)"
        return None

    def running(self) -> int:
        now = time.monotonic()
        for key in [k for k, t in self.tickets.items() if t.expires < now]:
            del self.tickets[key]
        return len(self.tickets) + len(self.calls)

    # -- routes ------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/talk", self.index)
        app.router.add_get("/talk/", self.index)
        app.router.add_get("/talk/{agent}", self.page)
        app.router.add_post("/talk/{agent}/calls", self.reserve)
        app.router.add_get("/talk/{agent}/calls/{call}", self.socket)

    def _names(self) -> list[str]:
        return sorted(self.serving())

    async def index(self, request: web.Request) -> web.Response:
        refused = self.refusal(request)
        if refused:
            return _html(403, "Browser calls refused", f"<p>{escape(refused)}</p>")
        if self.stopping():
            return self._stopping_page()
        return _html(200, "Talk to an agent", self._agent_list())

    @staticmethod
    def _stopping_page() -> web.Response:
        return _html(503, "Serve is stopping", f"<p>{escape(STOPPING)}.</p>", retry_after=STOPPING_RETRY_AFTER)

    def _agent_list(self) -> str:
        names = self._names()
        if not names:
            return "<p>No agent is served (yet): see the <a href='/'>status page</a>.</p>"
        return "<ul>" + "".join(f'<li><a href="/talk/{escape(n)}">{escape(n)}</a></li>' for n in names) + "</ul>"

    async def page(self, request: web.Request) -> web.Response:
        refused = self.refusal(request)
        if refused:
            return _html(403, "Browser calls refused", f"<p>{escape(refused)}</p>")
        if self.stopping():
            return self._stopping_page()
        agent = request.match_info["agent"]
        loaded = self.spec_of(agent) if agent in self.serving() else None
        if loaded is None:
            return _html(404, "No such agent",
                         f"<p>No agent named <b>{escape(agent[:100])}</b> is served here. "
                         f"Agents: {escape(', '.join(self._names()) or 'none')}.</p>" + self._agent_list())
        from .talk_job import speaks

        audio = speaks(loaded)
        missing = self._missing_keys(loaded, audio)
        notice = _missing_notice(missing)
        spec: Any = loaded.spec
        description = (f"{'voice' if audio else 'text only'}: "
                       + ("realtime model" if spec.realtime is not None else "pipeline")
                       + (", the caller can interrupt the agent" if audio else ""))
        config = {"agent": agent, "audio": audio, "calls": f"/talk/{agent}/calls", "inputRate": INPUT_RATE,
                  "outputRate": OUTPUT_RATE, "loud": LOUD, "token": request.query.get("token") or None,
                  "blocked": bool(missing)}
        text = (PAGE.read_text(encoding="utf-8")
                .replace("{{AGENT}}", escape(agent))
                .replace("{{DESCRIPTION}}", escape(description))
                .replace("{{NOTICE}}", f'<span class="bad">{escape(notice)}</span>' if notice else "")
                .replace("{{CONFIG}}", json.dumps(config).replace("</", "<\\/")))
        return _response(200, self.secrets.redact(text))

    def _missing_keys(self, loaded: LoadedSpec, audio: bool) -> list[str]:
        from ..plugins.registry import missing_api_keys

        try:
            return missing_api_keys(loaded, self.registry(), text_only=not audio)
        except Exception:  # noqa: BLE001 - a plugin's provider that cannot say; the call will tell
            log.debug("could not check the provider keys of %s", loaded.name, exc_info=True)
            return []

    async def reserve(self, request: web.Request) -> web.Response:
        refused = self.refusal(request)
        if refused:
            return _error(403, refused)
        if self.stopping():
            return _stopping_error()
        agent = request.match_info["agent"]
        if agent not in self.serving() or self.spec_of(agent) is None:
            return _error(404, f"no agent named {agent[:100]!r} is served here; agents: "
                               f"{', '.join(self._names()) or 'none'}")
        from .talk_job import speaks

        loaded = self.spec_of(agent)
        missing = self._missing_keys(loaded, speaks(loaded))
        if missing:  # the job would only fail on its first request
            return _error(409, _missing_notice(missing))
        running = self.running()
        if running >= self.options.max_calls:
            return _error(429, f"{running} browser call(s) in progress or about to start: at most {self.options.max_calls} at once "
                               "(serve --max-browser-calls); hang up another call or try again later",
                          **{"Retry-After": "10"})
        context = _query_context(request, loaded)
        if isinstance(context, str):
            return _error(400, context)
        call = token_source.token_urlsafe(12)
        self.tickets[call] = _Ticket(agent, time.monotonic() + TICKET_S, context=context)
        from aiohttp import web

        return web.json_response({"agent": agent, "socket": f"/talk/{agent}/calls/{call}",
                                  "max_call_seconds": self.options.max_call_seconds}, status=201)

    async def socket(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        refused = self.refusal(request)
        if refused:
            return _error(403, refused)
        if self.stopping():  # reserved before the stop signal: not started after it
            return _stopping_error()
        agent, call = request.match_info["agent"], request.match_info["call"]
        ticket = self.tickets.pop(call, None)
        if ticket is None or ticket.agent != agent or ticket.expires < time.monotonic():
            return _error(404, "no such call reserved (POST /talk/<agent>/calls first; a reservation lasts "
                               f"{TICKET_S:g} s)")
        ws = web.WebSocketResponse(max_msg_size=MAX_WS_MESSAGE, heartbeat=20.0)
        await ws.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        self.calls.add(task)
        try:
            await self._call(ws, agent, ticket.context or {})
        finally:
            self.calls.discard(task)
            await ws.close()
        return ws

    async def _call(self, ws: web.WebSocketResponse, agent: str, context: dict[str, str]) -> None:
        room = f"{ROOM_PREFIX}{time.time_ns()}"
        token = token_source.token_hex(16)
        waiting: asyncio.Future[_Joined] = asyncio.get_running_loop().create_future()
        self.waiting[token] = waiting
        metadata = json.dumps({"talk": {"socket": self.path, "token": token, "context": context,
                                        "max_call_seconds": self.options.max_call_seconds}})
        relay = _Relay(ws, self.secrets)
        # the page talks from the start: its audio goes nowhere until the job is there
        from_page = asyncio.ensure_future(relay.page_to_job())
        try:
            await ws.send_json({"type": "status", "text": "Connecting: starting a job process for the call\u2026"})
            try:
                await self.launch(agent, room, metadata)
            except Exception as exc:  # noqa: BLE001 - the agent stopped serving, or no process: the page says
                log.warning("browser call to %s: the job did not start: %s", agent, exc)
                await ws.send_json({"type": "error", "message": f"the call did not start: {exc}"})
                return
            await asyncio.wait({waiting, from_page}, timeout=JOB_CONNECT_S, return_when=asyncio.FIRST_COMPLETED)
            if from_page.done():
                return  # hung up before the agent was there (a job that joins later finds no call and ends)
            if not waiting.done():
                await ws.send_json({"type": "error", "message": f"the job did not connect within {JOB_CONNECT_S:g}s"})
                return
            log.info("browser call to %s started (room %s)", agent, room, extra={"agent": agent})
            await relay.run(waiting.result(), from_page, self.options.max_call_seconds + 5.0)
            log.info("browser call to %s ended (room %s)", agent, room, extra={"agent": agent})
        finally:
            from_page.cancel()
            self.waiting.pop(token, None)
            if not waiting.done():
                waiting.cancel()
            elif not waiting.cancelled():
                joined = waiting.result()
                joined.writer.close()
                if not joined.done.done():
                    joined.done.set_result(None)


class _Relay:
    """Frames between a page's WebSocket and its job's connection, both ways,
    without reading the audio."""

    HELD_MESSAGES = 8  # typed turns sent before the job is there are held, this many

    def __init__(self, ws: web.WebSocketResponse, secrets: SecretSet) -> None:
        self.ws, self.secrets = ws, secrets
        self.joined: _Joined | None = None
        self.held: list[bytes] = []

    async def page_to_job(self) -> None:
        from aiohttp import WSMsgType

        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                data = frame(AUDIO, msg.data)
            elif msg.type == WSMsgType.TEXT:
                data = frame(MESSAGE, msg.data.encode())
            else:
                break
            if self.joined is None:
                if data[:1] == MESSAGE and len(self.held) < self.HELD_MESSAGES:
                    self.held.append(data)
                continue
            self.joined.writer.write(data)
            await self.joined.writer.drain()

    async def job_to_page(self) -> None:
        assert self.joined is not None
        while True:
            got = await read_frame(self.joined.reader)
            if got is None:
                return
            kind, payload = got
            if kind == AUDIO:
                await self.ws.send_bytes(payload)
            else:  # the transcript and tool results may quote a ${VAR} value
                await self.ws.send_str(self.secrets.redact(payload.decode(errors="replace")))

    async def run(self, joined: _Joined, from_page: asyncio.Future[None], limit_s: float) -> None:
        """Until either side is gone or ``limit_s`` passed (the job ends the call at
        --max-call-seconds itself; this bounds a job that does not)."""
        self.joined = joined
        for data in self.held:
            joined.writer.write(data)
        self.held.clear()
        to_page = asyncio.ensure_future(self.job_to_page())
        try:
            done, _ = await asyncio.wait({from_page, to_page}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and isinstance(task.exception(), (FrameError, ConnectionError)):
                    log.warning("browser call: %s", task.exception())
        finally:
            to_page.cancel()
            with contextlib.suppress(BaseException):
                await to_page


def _response(status: int, text: str, *, retry_after: str | None = None) -> web.Response:
    from aiohttp import web

    return web.Response(status=status, text=text, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", **({"Retry-After": retry_after} if retry_after else {})})


def _html(status: int, title: str, body: str, *, retry_after: str | None = None) -> web.Response:
    return _response(status, f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}"
                             f"</title></head><body style='font:15px system-ui,sans-serif;margin:1.5em'>"
                             f"<h1>{escape(title)}</h1>{body}</body></html>\n", retry_after=retry_after)


def _missing_notice(missing: list[str]) -> str:
    if not missing:
        return ""
    return ("; ".join(m.rstrip(". ") for m in missing) + ". Set it in serve's environment and restart serve, "
            "or give the spec's api_key (the agent reloads).")


NOT_CONTEXT = ("token", "autostart")  # the page's own query parameters
MAX_QUERY_VALUES = 64


def _query_context(request: web.Request, loaded: LoadedSpec) -> dict[str, str] | str:
    """The call's context from the query (the page passes its own on): each name must
    be one the spec declares, and the values are checked as a LiveKit call's are (the
    job checks them again); a string is why the call is refused (400), without values."""
    from ..spec.call_context import ContextRefused, local_values

    given = [(k, v) for k, v in request.query.items() if k not in NOT_CONTEXT]
    if not given:
        return {}
    names = [k for k, _ in given]
    if len(given) > MAX_QUERY_VALUES or len(set(names)) != len(names):
        return f"call context: at most {MAX_QUERY_VALUES} query values, each name once"
    try:
        local_values(loaded.spec.context, dict(given))
    except ContextRefused as exc:
        return f"call refused: {exc}"
    return dict(given)


def _stopping_error() -> web.Response:
    return _error(503, STOPPING, **{"Retry-After": STOPPING_RETRY_AFTER})


def _error(status: int, message: str, **headers: str) -> web.Response:
    from aiohttp import web

    return web.json_response({"ok": False, "error": message}, status=status, headers=headers or None)
