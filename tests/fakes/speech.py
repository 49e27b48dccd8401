"""Fake Deepgram (speech-to-text) and Cartesia (text-to-speech) HTTP APIs.

Only what the livekit plugins' one-shot calls use: Deepgram's prerecorded
``POST /v1/listen`` (``deepgram.STT.recognize``) and Cartesia's ``POST /tts/bytes``
(``cartesia.TTS.synthesize``). Every request is recorded with its headers, so a
test can see which key reached the provider.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .openai_chat import RecordedRequest, _ScriptedServer, text


class _RecordingServer(_ScriptedServer):
    def __init__(self) -> None:
        super().__init__(lambda _: text(""))  # nothing here is scripted
        self.requests: list[RecordedRequest] = []

    def _record(self, request: web.Request, body: dict[str, Any]) -> RecordedRequest:
        rec = RecordedRequest(body, method=request.method, path=request.path, headers=dict(request.headers))
        self.requests.append(rec)
        return rec

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")


class FakeDeepgram(_RecordingServer):
    """``base_url`` for the plugin: ``root_url + "/v1/listen"``."""

    def __init__(self, transcript: str = "hello from the fake deepgram") -> None:
        super().__init__()
        self.transcript = transcript

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/listen", self._listen)
        return app

    async def _listen(self, request: web.Request) -> web.Response:
        audio = await request.read()
        self._record(request, {"query": dict(request.query), "audio_bytes": len(audio)})
        words = [{"word": w, "punctuated_word": w, "start": 0.1 * i, "end": 0.1 * i + 0.1, "confidence": 0.99}
                 for i, w in enumerate(self.transcript.split())]
        return web.json_response({
            "metadata": {"request_id": self._new_id("dg"), "duration": 0.1, "channels": 1},
            "results": {"channels": [{"alternatives": [
                {"transcript": self.transcript, "confidence": 0.99, "words": words}]}]},
        })


class FakeCartesia(_RecordingServer):
    """``base_url`` for the plugin: ``root_url``."""

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/tts/bytes", self._bytes)
        return app

    async def _bytes(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        rate = int((body.get("output_format") or {}).get("sample_rate") or 24000)
        return web.Response(body=b"\0\0" * (rate // 10), content_type="application/octet-stream")
