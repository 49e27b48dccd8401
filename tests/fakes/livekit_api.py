"""A fake LiveKit server API: the Twirp services livekit-api's ``SipService`` and
``AgentDispatchService`` call (``POST /twirp/livekit.SIP/<Method>``,
``/twirp/livekit.AgentDispatchService/<Method>``, ``RoomService/DeleteRoom``), with
protobuf binary bodies as livekit-api 1.2.2 sends them (``application/protobuf``) and
protobuf JSON as other clients do. It keeps trunks,
dispatch rules, dispatches and dialled participants, and records every request
(``requests``: method and the request as a dict; ``of(method)``: the request as the
protobuf message, with the grants of its bearer token, decoded, not verified).

What an agent asks during a call: ``TransferSIPParticipant`` (a cold transfer; its
answer is ``transfer_outcome``: "successful", "failed" (a 200 with a failed status) or
an HTTP status (a Twirp error)) and ``CreateSIPParticipant`` (what a warm transfer
dials the human with).

Outcomes of a call are decided by the number dialled (``sip_call_to``):

| the number ends in | the call | as LiveKit reports it |
|---|---|---|
| ``0486`` | busy | SIP 486 Busy Here |
| ``0408`` | not answered | SIP 408 Request Timeout |
| ``0503`` | failed | SIP 503 Service Unavailable |
| anything else | answered | a ``SIPParticipantInfo`` |

Faults: ``fail_request = N`` answers the Nth request from now (counting every
request) with a Twirp ``internal`` error; a request without a bearer token gets 401.
Run alone: ``python -m tests.fakes.livekit_api --port 7881``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SIP_OUTCOMES = {"0486": (486, "Busy Here"), "0408": (408, "Request Timeout"), "0503": (503, "Service Unavailable")}


@dataclass
class Received:
    method: str
    request: Any  # the protobuf message
    grants: dict[str, Any]  # of the bearer token (decoded, not verified)


@dataclass
class FakeLiveKitAPI:
    host: str = "127.0.0.1"
    port: int = 0
    inbound: dict[str, Any] = field(default_factory=dict)  # id -> SIPInboundTrunkInfo
    outbound: dict[str, Any] = field(default_factory=dict)  # id -> SIPOutboundTrunkInfo
    rules: dict[str, Any] = field(default_factory=dict)  # id -> SIPDispatchRuleInfo
    dispatches: list[Any] = field(default_factory=list)  # AgentDispatch
    participants: list[Any] = field(default_factory=list)  # CreateSIPParticipantRequest, answered ones
    deleted_rooms: list[str] = field(default_factory=list)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (method, request as a dict)
    fail_request: int | None = None  # the Nth request from now fails
    echo_authorization: bool = False  # a hostile or careless server: every error quotes the request's header
    transfer_outcome: str | int = "successful"  # of the next TransferSIPParticipant
    received: list[Received] = field(default_factory=list)  # every request as its message, with its token's grants
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def writes(self) -> list[str]:
        """The methods of the requests that change something, in order."""
        return [m for m, _ in self.requests if not m.startswith(("List", "Get"))]

    def of(self, method: str) -> list[Received]:
        return [r for r in self.received if r.method == method]

    # -- objects a test puts there beforehand (someone else's, or ours from before) --

    def add_inbound(self, **fields: Any) -> str:
        from livekit.protocol import sip

        return self._store(self.inbound, sip.SIPInboundTrunkInfo(**fields), "sip_trunk_id", "ST_")

    def add_outbound(self, **fields: Any) -> str:
        from livekit.protocol import sip

        return self._store(self.outbound, sip.SIPOutboundTrunkInfo(**fields), "sip_trunk_id", "ST_")

    def add_rule(self, **fields: Any) -> str:
        from livekit.protocol import sip

        return self._store(self.rules, sip.SIPDispatchRuleInfo(**fields), "sip_dispatch_rule_id", "SDR_")

    def _store(self, into: dict[str, Any], info: Any, id_field: str, prefix: str) -> str:
        new_id = f"{prefix}{next(self._ids)}"
        setattr(info, id_field, new_id)
        into[new_id] = info
        return new_id

    # -- serving ---------------------------------------------------------------------

    async def start(self, port: int | None = None) -> str:
        app = web.Application()
        app.router.add_post("/twirp/livekit.{service}/{method}", self._twirp)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port if port is None else port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def start_in_thread(self) -> str:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="fake-livekit-api")
        self._thread.start()
        ready.wait(10)
        return self.url

    def stop_thread(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _twirp(self, request: web.Request) -> web.Response:
        from google.protobuf import json_format

        method = request.match_info["method"]
        handler = getattr(self, f"_{method}", None)
        if handler is None:
            return _error(404, "bad_route", f"no method {method}")
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return _error(401, "unauthenticated", "no bearer token")
        req_type, handle = handler()
        raw = await request.read()
        as_json = request.content_type == "application/json"
        message = req_type()
        if as_json:
            json_format.Parse(raw or b"{}", message)
        else:
            message.ParseFromString(raw)
        self.requests.append((method, json_format.MessageToDict(message, preserving_proto_field_name=True)))
        self.received.append(Received(method, message, _grants(request.headers["Authorization"])))
        if self.fail_request is not None:
            self.fail_request -= 1
            if self.fail_request == 0:
                self.fail_request = None
                return _error(500, "internal", "the fake was told to fail this request")
        if self.echo_authorization:
            return _error(500, "internal", f"cannot serve {request.headers.get('Authorization')}")
        try:
            reply = handle(message)
        except _TwirpError as exc:
            return _error(exc.status, exc.code, exc.msg, exc.meta)
        if as_json:
            return web.json_response(json_format.MessageToDict(reply, preserving_proto_field_name=True))
        return web.Response(body=reply.SerializeToString(), content_type="application/protobuf")

    # -- the methods: each returns (request type, handler) ------------------------------

    def _ListSIPInboundTrunk(self) -> Any:
        from livekit.protocol import sip

        return sip.ListSIPInboundTrunkRequest, lambda r: sip.ListSIPInboundTrunkResponse(items=list(self.inbound.values()))

    def _ListSIPOutboundTrunk(self) -> Any:
        from livekit.protocol import sip

        return sip.ListSIPOutboundTrunkRequest, lambda r: sip.ListSIPOutboundTrunkResponse(items=list(self.outbound.values()))

    def _ListSIPDispatchRule(self) -> Any:
        from livekit.protocol import sip

        return sip.ListSIPDispatchRuleRequest, lambda r: sip.ListSIPDispatchRuleResponse(items=list(self.rules.values()))

    def _CreateSIPInboundTrunk(self) -> Any:
        from livekit.protocol import sip

        def create(r: Any) -> Any:
            self._refuse_taken_numbers(r.trunk.numbers, self.inbound.values(), "trunk")
            trunk_id = self._store(self.inbound, sip.SIPInboundTrunkInfo(), "sip_trunk_id", "ST_")
            self.inbound[trunk_id].CopyFrom(r.trunk)
            self.inbound[trunk_id].sip_trunk_id = trunk_id
            return self.inbound[trunk_id]

        return sip.CreateSIPInboundTrunkRequest, create

    def _CreateSIPOutboundTrunk(self) -> Any:
        from livekit.protocol import sip

        def create(r: Any) -> Any:
            trunk_id = self._store(self.outbound, sip.SIPOutboundTrunkInfo(), "sip_trunk_id", "ST_")
            self.outbound[trunk_id].CopyFrom(r.trunk)
            self.outbound[trunk_id].sip_trunk_id = trunk_id
            return self.outbound[trunk_id]

        return sip.CreateSIPOutboundTrunkRequest, create

    def _CreateSIPDispatchRule(self) -> Any:
        from livekit.protocol import sip

        def create(r: Any) -> Any:
            info = r.dispatch_rule
            self._refuse_taken_numbers(info.numbers, self.rules.values(), "dispatch rule")
            rule_id = self._store(self.rules, sip.SIPDispatchRuleInfo(), "sip_dispatch_rule_id", "SDR_")
            self.rules[rule_id].CopyFrom(info)
            self.rules[rule_id].sip_dispatch_rule_id = rule_id
            return self.rules[rule_id]

        return sip.CreateSIPDispatchRuleRequest, create

    def _UpdateSIPInboundTrunk(self) -> Any:
        from livekit.protocol import sip

        return sip.UpdateSIPInboundTrunkRequest, lambda r: self._replace(self.inbound, r.sip_trunk_id, r.replace, "sip_trunk_id")

    def _UpdateSIPOutboundTrunk(self) -> Any:
        from livekit.protocol import sip

        return sip.UpdateSIPOutboundTrunkRequest, lambda r: self._replace(self.outbound, r.sip_trunk_id, r.replace, "sip_trunk_id")

    def _UpdateSIPDispatchRule(self) -> Any:
        from livekit.protocol import sip

        return sip.UpdateSIPDispatchRuleRequest, lambda r: self._replace(self.rules, r.sip_dispatch_rule_id, r.replace,
                                                                          "sip_dispatch_rule_id")

    def _DeleteSIPTrunk(self) -> Any:
        from livekit.protocol import sip

        def delete(r: Any) -> Any:
            for into in (self.inbound, self.outbound):
                if r.sip_trunk_id in into:
                    into.pop(r.sip_trunk_id)
                    return sip.SIPTrunkInfo(sip_trunk_id=r.sip_trunk_id)
            raise _TwirpError(404, "not_found", f"no trunk {r.sip_trunk_id}")

        return sip.DeleteSIPTrunkRequest, delete

    def _DeleteSIPDispatchRule(self) -> Any:
        from livekit.protocol import sip

        def delete(r: Any) -> Any:
            if self.rules.pop(r.sip_dispatch_rule_id, None) is None:
                raise _TwirpError(404, "not_found", f"no dispatch rule {r.sip_dispatch_rule_id}")
            return sip.SIPDispatchRuleInfo(sip_dispatch_rule_id=r.sip_dispatch_rule_id)

        return sip.DeleteSIPDispatchRuleRequest, delete

    def _CreateDispatch(self) -> Any:
        from livekit.protocol import agent_dispatch

        def create(r: Any) -> Any:
            dispatch = agent_dispatch.AgentDispatch(id=f"AD_{next(self._ids)}", agent_name=r.agent_name, room=r.room,
                                                    metadata=r.metadata)
            self.dispatches.append(dispatch)
            return dispatch

        return agent_dispatch.CreateAgentDispatchRequest, create

    def _CreateSIPParticipant(self) -> Any:
        from livekit.protocol import sip

        def dial(r: Any) -> Any:
            if r.sip_trunk_id not in self.outbound:
                raise _TwirpError(404, "not_found", f"no outbound trunk {r.sip_trunk_id}")
            outcome = SIP_OUTCOMES.get(r.sip_call_to[-4:])
            if outcome is not None:
                code, status = outcome
                raise _TwirpError(503 if code >= 500 else 400, "unavailable" if code >= 500 else "failed_precondition",
                                  f"call failed: {code} {status}", {"sip_status_code": str(code), "sip_status": status})
            self.participants.append(r)
            return sip.SIPParticipantInfo(participant_id=f"PA_{next(self._ids)}",
                                          participant_identity=r.participant_identity, room_name=r.room_name,
                                          sip_call_id=f"SCL_{next(self._ids)}")

        return sip.CreateSIPParticipantRequest, dial

    def _TransferSIPParticipant(self) -> Any:
        from livekit.protocol import sip

        def transfer(r: Any) -> Any:
            if isinstance(self.transfer_outcome, int):
                raise _TwirpError(self.transfer_outcome, "unavailable", "the far end refused the REFER")
            failed = self.transfer_outcome == "failed"
            return sip.TransferSIPParticipantResponse(
                transfer_id=f"TR_{next(self._ids)}",
                status=sip.SIPTransferStatus.STS_TRANSFER_FAILED if failed else sip.SIPTransferStatus.STS_TRANSFER_SUCCESSFUL,
                reason=sip.SIPTransferReason.STR_REJECTED if failed else sip.SIPTransferReason.STR_COMPLETED)

        return sip.TransferSIPParticipantRequest, transfer

    def _DeleteRoom(self) -> Any:
        from livekit.protocol import room

        def delete(r: Any) -> Any:
            self.deleted_rooms.append(r.room)
            return room.DeleteRoomResponse()

        return room.DeleteRoomRequest, delete

    # -- helpers -----------------------------------------------------------------------

    def _replace(self, into: dict[str, Any], object_id: str, info: Any, id_field: str) -> Any:
        if object_id not in into:
            raise _TwirpError(404, "not_found", f"no such object {object_id}")
        into[object_id].CopyFrom(info)
        setattr(into[object_id], id_field, object_id)
        return into[object_id]

    @staticmethod
    def _refuse_taken_numbers(numbers: Any, existing: Any, what: str) -> None:
        """LiveKit refuses a second object for the same number (without other filters)."""
        for other in existing:
            taken = set(numbers) & set(other.numbers)
            if taken:
                raise _TwirpError(400, "invalid_argument", f"{what} conflicts with {other.name or 'another'}: "
                                                          f"{', '.join(sorted(taken))}")


def _grants(header: str) -> dict[str, Any]:
    parts = header.removeprefix("Bearer ").strip().split(".")
    if len(parts) != 3:
        return {}
    return json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))


class _TwirpError(Exception):
    def __init__(self, status: int, code: str, msg: str, meta: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg, self.meta = status, code, msg, meta


def _error(status: int, code: str, msg: str, meta: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"code": code, "msg": msg}
    if meta:
        body["meta"] = meta
    return web.json_response(body, status=status)


if __name__ == "__main__":
    import argparse

    from ._standalone import run_standalone

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7881)
    run_standalone(FakeLiveKitAPI(), parser.parse_args().port, lambda f: f.url)
