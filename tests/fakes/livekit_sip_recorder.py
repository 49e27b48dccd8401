"""A fake of LiveKit's server API for the SIP calls an agent makes during a call:
``TransferSIPParticipant`` (a cold transfer) and ``CreateSIPParticipant`` (what a
warm transfer dials), over Twirp (protobuf) as livekit-api sends them. Every request
is kept with the grants of its bearer token (decoded, not verified: the test
checks what was asked for, and that a token was sent).

Minimal on purpose: the ``sip`` helper's ``tests/fakes/livekit_api.py`` is the
full fake of the SIP service (trunks, dispatch rules); this one may be merged
into it. Run alone: ``python -m tests.fakes.livekit_sip_recorder --port 7881``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PREFIX = "/twirp/livekit.SIP/"


@dataclass
class SipRequest:
    method: str
    request: Any  # the protobuf message
    grants: dict[str, Any]


@dataclass
class FakeSipApi:
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[SipRequest] = field(default_factory=list)
    # the outcome of the next transfers: "successful", "failed" (a 200 with a failed status)
    # or an HTTP status (a Twirp error)
    transfer_outcome: str | int = "successful"
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        app = web.Application()
        app.add_routes([web.post(PREFIX + "{method}", self._sip)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def of(self, method: str) -> list[SipRequest]:
        return [r for r in self.requests if r.method == method]

    async def _sip(self, request: web.Request) -> web.Response:
        from livekit.protocol import sip

        method = request.match_info["method"]
        types = {"TransferSIPParticipant": (sip.TransferSIPParticipantRequest, sip.TransferSIPParticipantResponse),
                 "CreateSIPParticipant": (sip.CreateSIPParticipantRequest, sip.SIPParticipantInfo)}
        if method not in types:
            return _twirp_error(404, "bad_route", f"no method {method}")
        request_type, response_type = types[method]
        message = request_type.FromString(await request.read())
        self.requests.append(SipRequest(method, message, _grants(request.headers.get("Authorization", ""))))
        if method == "TransferSIPParticipant":
            if isinstance(self.transfer_outcome, int):
                return _twirp_error(self.transfer_outcome, "unavailable", "the far end refused the REFER")
            failed = self.transfer_outcome == "failed"
            response = response_type(
                transfer_id="TR_1",
                status=sip.SIPTransferStatus.STS_TRANSFER_FAILED if failed else sip.SIPTransferStatus.STS_TRANSFER_SUCCESSFUL,
                reason=sip.SIPTransferReason.STR_REJECTED if failed else sip.SIPTransferReason.STR_COMPLETED)
        else:
            response = response_type(participant_id="PA_1", participant_identity=message.participant_identity,
                                     room_name=message.room_name, sip_call_id="SCL_1")
        return web.Response(body=response.SerializeToString(), content_type="application/protobuf")


def _twirp_error(status: int, code: str, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


def _grants(header: str) -> dict[str, Any]:
    token = header.removeprefix("Bearer ").strip()
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


def main() -> None:
    import argparse
    import asyncio

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=7881)
    args = parser.parse_args()

    async def run() -> None:
        fake = FakeSipApi(port=args.port)
        print(await fake.start(), flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
