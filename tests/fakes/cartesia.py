"""A fake Cartesia text-to-speech API: ``POST /tts/bytes`` (one-shot) and the
``/tts/websocket`` livekit's ``cartesia.TTS`` streams to in a call, both answering
with espeak-ng speech of the text in the requested ``output_format`` (raw
``pcm_s16le`` or ``pcm_f32le`` at the requested sample rate).

Websocket protocol (what the plugin sends and reads): each text message is a JSON
request with a ``context_id``, a ``transcript`` piece and ``continue``; each piece is
answered with ``chunk`` messages (base64 ``data``), and ``continue: false`` with
``done``. ``{"context_id": ..., "cancel": true}`` stops a context.

    python -m tests.fakes.cartesia --port 8402

then ``base_url: http://127.0.0.1:8402`` in the spec's cartesia TTS.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from typing import Any

from aiohttp import WSMsgType, web

from . import espeak
from ._standalone import run_standalone
from .openai_chat import RecordedRequest, _ScriptedServer, error, text

CHUNK_SECONDS = 0.1


def encode(pcm: bytes, encoding: str) -> bytes:
    if encoding == "pcm_f32le":
        return espeak.f32_bytes(pcm)
    if encoding == "pcm_s16le":
        return pcm
    raise ValueError(f"unsupported encoding {encoding}")


class FakeCartesia(_ScriptedServer):
    """``base_url`` for the plugin: ``root_url``. ``spoken`` lists every transcript
    piece synthesized, ``refuse_connections`` answers websocket upgrades with 503 (a
    TTS fallback chain moves on), ``delay`` holds each answer that many seconds."""

    def __init__(self) -> None:
        super().__init__(lambda _: text(""))  # nothing here is scripted
        self.requests: list[RecordedRequest] = []
        self.messages: list[dict[str, Any]] = []  # websocket requests
        self.spoken: list[str] = []
        self.refuse_connections = False
        self.delay = 0.0

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def _record(self, request: web.Request, body: dict[str, Any]) -> RecordedRequest:
        rec = RecordedRequest(body, method=request.method, path=request.path, headers=dict(request.headers))
        self.requests.append(rec)
        return rec

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/tts/bytes", self._bytes)
        app.router.add_get("/tts/websocket", self._websocket)
        return app

    def _speech(self, transcript: str, output_format: dict[str, Any]) -> bytes:
        rate = int(output_format.get("sample_rate") or 24000)
        pcm = espeak.speak(transcript.strip(), rate) if transcript.strip() else b""
        self.spoken.append(transcript.strip())
        return encode(pcm, output_format.get("encoding") or "pcm_s16le")

    async def _bytes(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        audio = self._speech(body.get("transcript", ""), body.get("output_format") or {})
        return web.Response(body=audio, content_type="application/octet-stream")

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        self._record(request, {"query": dict(request.query), "websocket": True})
        if self.refuse_connections:
            return web.json_response(error(503, "fake cartesia refuses connections").body(), status=503)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        cancelled: set[str] = set()
        lock = asyncio.Lock()

        async def send(message: dict[str, Any]) -> None:
            if not ws.closed:
                async with lock:
                    await ws.send_str(json.dumps(message))

        async def answer(req: dict[str, Any]) -> None:
            context = req.get("context_id", "")
            if self.delay:
                await asyncio.sleep(self.delay)
            fmt = req.get("output_format") or {}
            piece = req.get("transcript", "")
            if piece.strip():
                audio = self._speech(piece, fmt)
                width = 4 if fmt.get("encoding") == "pcm_f32le" else 2
                step = int(int(fmt.get("sample_rate") or 24000) * CHUNK_SECONDS) * width
                for i in range(0, len(audio), step):
                    if context in cancelled:
                        return
                    await send({"type": "chunk", "context_id": context, "status_code": 206, "done": False,
                                "data": base64.b64encode(audio[i:i + step]).decode(), "step_time": CHUNK_SECONDS})
            if not req.get("continue", False) and context not in cancelled:
                await send({"type": "done", "context_id": context, "status_code": 206, "done": True})

        # requests of one context are answered in order, contexts side by side
        tails: dict[str, asyncio.Task[None]] = {}

        async def after(prev: asyncio.Task[None] | None, req: dict[str, Any]) -> None:
            if prev is not None:
                await asyncio.wait([prev])
            await answer(req)

        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                req = json.loads(msg.data)
            except json.JSONDecodeError:
                continue
            self.messages.append(req)
            context = req.get("context_id", "")
            if req.get("cancel"):
                cancelled.add(context)
                continue
            tails[context] = asyncio.ensure_future(after(tails.get(context), req))
        for task in tails.values():
            task.cancel()
        return ws


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.cartesia", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    run_standalone(FakeCartesia(), args.port, lambda f: f"cartesia base_url: {f.root_url}")


if __name__ == "__main__":
    main()
