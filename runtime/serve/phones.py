"""Phone lines in `serve`: the telephony folder read on every reload (last good lines
kept, as for specs), applied to LiveKit with ``--manage-sip`` (errors logged, serving
unaffected), and ``POST /calls`` on the operator port: an agent calls a number.

``POST /calls`` is off unless ``--calls-token '${VAR}'`` is given; every request must
carry ``Authorization: Bearer <token>`` (401 otherwise), and at most ``per_minute``
calls are placed a minute (429 beyond, with Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from .peers import bearer_token

if TYPE_CHECKING:
    from aiohttp import web

    from ..spec.secrets import SecretSet
    from ..spec.telephony import Lines
    from .options import CallsOptions, ServeOptions

log = logging.getLogger("voice_runtime.sip")
MAX_BODY_BYTES = 16 * 1024


class Phones:
    """The last good phone lines, and what serve does with them."""

    def __init__(self, options: ServeOptions, plugins: Callable[[], Any], agents: Callable[[], Collection[str]],
                 secrets: SecretSet) -> None:
        from ..spec.telephony import Lines, telephony_folder

        self.options = options
        self.folder = telephony_folder(options.agents_dir, options.telephony_dir)
        self.plugins, self.agents, self.secrets = plugins, agents, secrets
        self.lines: Lines = Lines(self.folder)
        self._problems: tuple[str, ...] = ()
        self._applied: str | None = None  # digest of the lines last applied in full
        self._failure: tuple[str, ...] = ()  # the last failure logged
        self._applying: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Read the folder (in a thread: never stall the loop); on a change, with
        --manage-sip, apply it. A folder with errors keeps the last good lines."""
        from ..spec.telephony import load_lines

        lines = await asyncio.to_thread(load_lines, self.folder, self.plugins(), list(self.agents()),
                                        required=self.options.telephony_dir is not None)
        self.secrets.add(lines.secrets)
        problems = tuple(str(e) for e in lines.errors)
        if problems:
            if problems != self._problems:  # said once per distinct set, not every scan
                log.warning("phone lines in %s have %d problem(s); keeping the last good ones", self.folder, len(problems))
                for problem in problems:
                    log.warning("%s", problem)
            self._problems = problems
            return
        self._problems = ()
        self.lines = lines
        if self.options.manage_sip and (self._applying is None or self._applying.done()):
            self._applying = asyncio.ensure_future(self._apply(lines))

    async def aclose(self) -> None:
        """An apply in progress is cut at stop: the next start plans what is left."""
        if self._applying is not None and not self._applying.done():
            self._applying.cancel()
            with contextlib.suppress(BaseException):
                await self._applying

    async def _apply(self, lines: Lines) -> None:
        from .sip_lines import desired_objects, digest, plan_and_apply, remote_error, render_applied

        o = self.options
        sealed = digest({f"{k[0]}/{k[1]}": v for k, v in desired_objects(lines).items()}, o.api_secret or "")
        if sealed == self._applied:
            return
        try:
            plan, applied = await plan_and_apply(lines, o.ws_url or "", o.api_key or "", o.api_secret or "",
                                                 apply=True, owner=o.sip_owner)
        except Exception as exc:  # noqa: BLE001 - LiveKit unreachable: serving goes on; the next reload retries
            self._failed([f"cannot read LiveKit's SIP objects: {remote_error(exc)}"])
            return
        if plan.conflicts:
            self._failed([*plan.conflicts, "the plan has conflicts; nothing was changed"])
            return
        assert applied is not None
        if not applied.ok:  # what was applied stays applied; the next reload plans the rest
            self._failed(render_applied(applied).splitlines())
            return
        for line in render_applied(applied).splitlines():
            log.info("--manage-sip: %s", line)
        self._applied, self._failure = sealed, ()

    def _failed(self, lines: list[str]) -> None:
        """Logged when it is news: each reload (every --scan-interval) retries, and the
        same refusal every few seconds would drown the log."""
        if tuple(lines) != self._failure:
            for line in lines:
                log.error("--manage-sip: %s", line)
        self._failure = tuple(lines)


class Calls:
    """POST /calls: authenticate, limit, check the request, place the call."""

    def __init__(self, phones: Phones, options: CallsOptions, served: Callable[[], Collection[str]],
                 spec_of: Callable[[str], Any]) -> None:
        self.phones, self.options, self.served, self.spec_of = phones, options, served, spec_of
        self._placed: list[float] = []  # monotonic times of the calls placed in the last minute

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/calls", self.handle)

    def _limited(self) -> float | None:
        """Seconds until a call may be placed, or None (and the call is counted)."""
        now = time.monotonic()
        self._placed = [t for t in self._placed if now - t < 60.0]
        if len(self._placed) >= self.options.per_minute:
            return 60.0 - (now - self._placed[0])
        self._placed.append(now)
        return None

    async def handle(self, request: web.Request) -> web.Response:
        from .dial import Refused, check_request, place_call
        from .sip_lines import remote_error

        given = bearer_token(request)
        if not given or not hmac.compare_digest(given.encode(), self.options.token.encode()):
            return _error(401, f"POST /calls needs the bearer token of {self.options.token_name} "
                               "(Authorization: Bearer <token>)", **{"WWW-Authenticate": "Bearer"})
        from .http import BadBody, read_json

        try:
            body = await read_json(request, MAX_BODY_BYTES)
        except BadBody as exc:
            return _error(exc.status, str(exc))
        if not isinstance(body, dict) or not isinstance(body.get("agent"), str) or not isinstance(body.get("to"), str) \
                or not isinstance(body.get("context", {}), dict) or not isinstance(body.get("trunk", ""), str):
            return _error(400, 'the body is {"agent": NAME, "to": "+E164", "context": {KEY: VALUE}, "trunk": NAME}; '
                               "agent and to are required")
        unknown = sorted(set(body) - {"agent", "to", "context", "trunk"})
        if unknown:
            return _error(400, f"unknown key(s) {', '.join(unknown)[:200]}")
        lines, agent, to, context = self.phones.lines, body["agent"], body["to"], body.get("context", {})
        try:
            loaded = self.spec_of(agent)
            declared = loaded.spec.context if loaded is not None else {}
            trunk = check_request(lines, agent, to, context, declared, body.get("trunk") or None, self.served())
        except Refused as exc:
            return _error(exc.status, str(exc))
        wait = self._limited()
        if wait is not None:
            return _error(429, f"at most {self.options.per_minute} calls a minute are placed",
                          **{"Retry-After": str(max(1, int(wait + 0.999)))})
        o = self.phones.options
        try:
            result = await place_call(lines, agent, to, context, trunk, o.ws_url or "", o.api_key or "",
                                      o.api_secret or "", o.sip_owner)
        except Refused as exc:
            return _error(exc.status, str(exc))
        except Exception as exc:  # noqa: BLE001 - LiveKit refused the dispatch or is unreachable
            log.warning("POST /calls: the call to %s was not placed: %s", to, remote_error(exc))
            return _error(502, f"the call was not placed: {remote_error(exc)}")
        log.info("POST /calls: %s called %s through %s: %s (call %s)", agent, to, trunk, result.outcome, result.call_id)
        return _json(200, self.phones.secrets.dumps(result.as_dict()))


def _json(status: int, text: str, **headers: str) -> web.Response:
    from aiohttp import web

    return web.Response(status=status, text=text + "\n", content_type="application/json", headers=headers or None)


def _error(status: int, message: str, **headers: str) -> web.Response:
    return _json(status, json.dumps({"ok": False, "error": message}), **headers)
