"""A fake Deepgram speech-to-text API: prerecorded ``POST /v1/listen`` and the
streaming websocket ``GET /v1/listen`` that livekit's ``deepgram.STT`` uses in a call.

The streaming side listens to the audio it is sent (linear16 at the ``sample_rate``
of the query) and finds speech by its energy. Once an utterance has been followed by
``end_silence_ms`` of quiet it answers with an interim ``Results`` (the first words)
and a final one (``is_final``, ``speech_final``) carrying the next scripted
transcript. ``Finalize`` answers a pending utterance at once (``from_finalize``),
``KeepAlive`` is recorded and ignored, ``CloseStream`` ends the stream with a
``Metadata`` message, as the real service does; with ``vad_events=true`` in the query
the start of speech is a ``SpeechStarted`` message.

    python -m tests.fakes.deepgram --port 8401 --transcript "What is the weather in Paris?"

then ``base_url: http://127.0.0.1:8401/v1/listen`` in the spec's deepgram STT.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
from typing import Any

from aiohttp import WSMsgType, web

from ._standalone import run_standalone
from .listening import Heard, Listener
from .openai_chat import RecordedRequest, _ScriptedServer, error, text


class FakeDeepgram(_ScriptedServer):
    """``base_url`` for the plugin: ``root_url + "/v1/listen"``.

    ``transcripts``: what the caller says, one per utterance heard (oldest first); once
    empty, ``transcript`` answers. ``refuse_connections``: websocket upgrades get 503
    (an STT fallback chain moves on)."""

    def __init__(self, transcript: str = "hello from the fake deepgram", *, end_silence_ms: int = 400,
                 threshold: float = 500.0) -> None:
        super().__init__(lambda _: text(""))  # answers come from transcripts, not replies
        self.transcript = transcript
        self.transcripts: collections.deque[str] = collections.deque()
        self.end_silence_ms = end_silence_ms
        self.threshold = threshold
        self.requests: list[RecordedRequest] = []
        self.messages: list[dict[str, Any]] = []  # every control message (KeepAlive, Finalize...)
        self.heard: list[str] = []  # transcripts sent as final results, in order
        self.refuse_connections = False
        self.streams = 0

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    @property
    def listen_url(self) -> str:
        return self.root_url + "/v1/listen"

    def say(self, *transcripts: str) -> None:
        """The transcripts of the next utterances, in order."""
        self.transcripts.extend(transcripts)

    def _record(self, request: web.Request, body: dict[str, Any]) -> RecordedRequest:
        rec = RecordedRequest(body, method=request.method, path=request.path, headers=dict(request.headers))
        self.requests.append(rec)
        return rec

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/listen", self._listen)
        app.router.add_get("/v1/listen", self._stream)
        return app

    def _next_transcript(self) -> str:
        return self.transcripts.popleft() if self.transcripts else self.transcript

    async def _listen(self, request: web.Request) -> web.Response:
        audio = await request.read()
        self._record(request, {"query": dict(request.query), "audio_bytes": len(audio)})
        said = self._next_transcript()
        return web.json_response({
            "metadata": {"request_id": self._new_id("dg"), "duration": 0.1, "channels": 1},
            "results": {"channels": [{"alternatives": [
                {"transcript": said, "confidence": 0.99, "words": _words(said, 0.0, 0.1 * len(said.split()))}]}]},
        })

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self._record(request, {"query": dict(request.query), "websocket": True})
        if self.refuse_connections:
            return web.json_response(error(503, "fake deepgram refuses connections").body(), status=503)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.streams += 1
        stream = _Stream(self, ws, int(request.query.get("sample_rate", "16000")), self._new_id("dg"),
                         vad_events=request.query.get("vad_events") == "true")
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await stream.audio(msg.data)
            elif msg.type == WSMsgType.TEXT:
                try:
                    message = json.loads(msg.data)
                except json.JSONDecodeError:
                    continue
                self.messages.append(message)
                kind = message.get("type")
                if kind == "Finalize":
                    await stream.answer(None, from_finalize=True)
                elif kind == "CloseStream":
                    await stream.answer(None, from_finalize=True)
                    await stream.send({"type": "Metadata", "request_id": stream.request_id,
                                       "duration": stream.position, "channels": 1})
                    await ws.close()
                    break
        return ws


class _Stream:
    """One websocket: what the caller has said so far, and how to answer it."""

    def __init__(self, fake: FakeDeepgram, ws: web.WebSocketResponse, rate: int, request_id: str,
                 *, vad_events: bool = False) -> None:
        self.fake, self.ws, self.request_id = fake, ws, request_id
        self.vad_events = vad_events
        self.listener = Listener(rate, threshold=fake.threshold, end_silence_ms=fake.end_silence_ms)
        self.lock = asyncio.Lock()

    @property
    def position(self) -> float:
        return self.listener.position

    async def audio(self, data: bytes) -> None:
        for heard in self.listener.feed(data):
            if heard.kind == "started" and self.vad_events:
                await self.send({"type": "SpeechStarted", "channel": [0, 1], "timestamp": round(heard.start, 3)})
            elif heard.kind == "ended":
                await self.answer(heard, from_finalize=False)

    async def answer(self, heard: Heard | None, *, from_finalize: bool) -> None:
        """Results for an utterance; ``None``: a Finalize, for what is under way, if anything."""
        async with self.lock:
            if heard is None and self.listener.start is not None:
                heard = self.listener.take()
            if heard is None:
                if from_finalize:  # nothing heard: an empty final result, as Deepgram sends
                    await self.send(self.results("", self.position, self.position, True, from_finalize))
                return
            said = self.fake._next_transcript()
            self.fake.heard.append(said)
            words = said.split()
            if len(words) > 1:
                await self.send(self.results(" ".join(words[: len(words) // 2]), heard.start, heard.end, False, False))
            await self.send(self.results(said, heard.start, heard.end, True, from_finalize))

    def results(self, said: str, start: float, end: float, final: bool, from_finalize: bool) -> dict[str, Any]:
        return {
            "type": "Results", "channel_index": [0, 1], "duration": round(end - start, 3), "start": round(start, 3),
            "is_final": final, "speech_final": final, "from_finalize": from_finalize,
            "channel": {"alternatives": [{"transcript": said, "confidence": 0.99 if said else 0.0,
                                          "words": _words(said, start, end)}]},
            "metadata": {"request_id": self.request_id, "model_info": {"name": "fake", "version": "0", "arch": "fake"},
                         "model_uuid": "00000000-0000-0000-0000-000000000000"},
        }

    async def send(self, message: dict[str, Any]) -> None:
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(message))


def _words(said: str, start: float, end: float) -> list[dict[str, Any]]:
    words = said.split()
    step = (end - start) / max(1, len(words))
    return [{"word": w.strip(".,?!").lower(), "punctuated_word": w, "start": round(start + i * step, 3),
             "end": round(start + (i + 1) * step, 3), "confidence": 0.99} for i, w in enumerate(words)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.deepgram", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--transcript", action="append", default=[],
                        help="what the caller said, one per utterance (repeat for several turns; the last repeats)")
    args = parser.parse_args(argv)
    fake = FakeDeepgram(*(args.transcript[-1:] or []))
    fake.say(*args.transcript[:-1])
    run_standalone(fake, args.port, lambda f: f"deepgram base_url: {f.listen_url}")


if __name__ == "__main__":
    main()
