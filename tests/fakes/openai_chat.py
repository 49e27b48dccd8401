"""A fake OpenAI Chat Completions server for offline tests.

`FakeOpenAI` is a real aiohttp server on 127.0.0.1, so the real `openai` client (and the
livekit `openai.LLM` plugin on top of it) talks to it over HTTP exactly as it would to
api.openai.com. Each turn is scripted with a `Reply` built by the helpers below (`text`,
`tool_call`, `tool_calls`, `error`, `hang`, `delay`); the same helpers drive the realtime
fake in `openai_realtime.py`.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import inspect
import itertools
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Self, Union

from aiohttp import web

__all__ = [
    "DelayReply",
    "ErrorReply",
    "FakeOpenAI",
    "HangReply",
    "RecordedRequest",
    "Reply",
    "Script",
    "TextReply",
    "ToolCall",
    "ToolCallsReply",
    "delay",
    "echo_script",
    "error",
    "hang",
    "text",
    "tool_call",
    "tool_calls",
    "transfer_script",
]


# --------------------------------------------------------------------------------------
# Replies (shared with the realtime fake)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextReply:
    """An assistant message, streamed word by word."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    call_id: str | None = None  # None: the fake numbers it (call_1, call_2, ...)


@dataclass(frozen=True)
class ToolCallsReply:
    """One assistant turn holding one or more tool calls (parallel calls)."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error in OpenAI's error JSON (chat) or a failed response (realtime)."""

    status: int = 500
    message: str = "The server had an error while processing your request."
    type: str | None = None  # None: derived from the status, as OpenAI does
    code: str | None = None

    @property
    def error_type(self) -> str:
        if self.type is not None:
            return self.type
        return "server_error" if self.status >= 500 else "invalid_request_error"

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": None,
                "code": self.code,
            }
        }


@dataclass(frozen=True)
class HangReply:
    """Never answer; the request stays open until the fake is stopped."""


@dataclass(frozen=True)
class DelayReply:
    seconds: float
    reply: Reply


Reply = Union[TextReply, ToolCallsReply, ErrorReply, HangReply, DelayReply]

# A script may be sync or async; it gets the request body (chat) or the conversation
# items (realtime) and returns the reply for this turn.
Script = Callable[[Any], Union[Reply, Awaitable[Reply]]]


def text(content: str) -> TextReply:
    return TextReply(content)


def tool_call(
    name: str, args: dict[str, Any] | None = None, call_id: str | None = None
) -> ToolCallsReply:
    return ToolCallsReply((ToolCall(name, dict(args or {}), call_id),))


def tool_calls(
    calls: Iterable[tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], str | None]],
) -> ToolCallsReply:
    """Several tool calls in one turn: `tool_calls([("a", {...}), ("b", {...}, "call_b")])`."""
    out = []
    for c in calls:
        call_id = c[2] if len(c) > 2 else None  # type: ignore[misc]
        out.append(ToolCall(c[0], dict(c[1]), call_id))
    return ToolCallsReply(tuple(out))


def error(
    status: int = 500,
    message: str = "The server had an error while processing your request.",
    *,
    type: str | None = None,  # noqa: A002 - OpenAI's field name
    code: str | None = None,
) -> ErrorReply:
    return ErrorReply(status=status, message=message, type=type, code=code)


def hang() -> HangReply:
    return HangReply()


def delay(seconds: float, reply: Reply) -> DelayReply:
    return DelayReply(seconds, reply)


# --------------------------------------------------------------------------------------
# Scripts
# --------------------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    """Text of a chat message `content`, which is a string or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append(part["text"])
    return "".join(parts)


def echo_script(request: dict[str, Any]) -> Reply:
    """Default script: answer `echo: <last user message>`."""
    for msg in reversed(request.get("messages") or []):
        if msg.get("role") == "user":
            return text(f"echo: {_content_text(msg.get('content'))}")
    return text("echo: ")


def transfer_script(request: dict[str, Any]) -> Reply:
    """A model that always hands off: it calls the first ``transfer_to_*`` tool it is
    offered, and answers (``<model> answers: <last user message>``) only when it is
    offered none."""
    for tool in request.get("tools") or []:
        name = (tool.get("function") or {}).get("name", "")
        if name.startswith("transfer_to_"):
            return tool_call(name, {})
    said = echo_script(request)
    assert isinstance(said, TextReply)
    return text(f"{request.get('model')} answers: {said.text.removeprefix('echo: ')}")


def _chat_tool_then_answer(
    tool_name: str, args: dict[str, Any]
) -> Callable[[dict[str, Any]], Reply]:
    def script(request: dict[str, Any]) -> Reply:
        # the tool's output since the caller last spoke (what the agent said while the
        # tool ran, a filler, may come after it)
        for msg in reversed(request.get("messages") or []):
            if msg.get("role") == "user":
                break
            if msg.get("role") == "tool":
                return text(f"Result: {_content_text(msg.get('content'))}")
        return tool_call(tool_name, args)

    return script


# --------------------------------------------------------------------------------------
# Streaming helpers
# --------------------------------------------------------------------------------------


def _words(s: str) -> list[str]:
    """Split text into word-plus-trailing-space pieces; joining them gives `s` back."""
    return re.findall(r"\s*\S+\s*|\s+", s) or [""]


def _pieces(s: str, n: int = 3) -> list[str]:
    """Split a string into about `n` consecutive pieces (tool arguments arrive in pieces)."""
    if not s:
        return [""]
    size = max(1, -(-len(s) // n))
    return [s[i : i + size] for i in range(0, len(s), size)]


class RecordedRequest(dict[str, Any]):
    """One request the fake received: the dict is the parsed JSON body ({} for a GET);
    `.method`, `.path` and `.headers` describe the HTTP request."""

    def __init__(
        self, body: dict[str, Any], *, method: str, path: str, headers: dict[str, str]
    ) -> None:
        super().__init__(body)
        self.method = method
        self.path = path
        self.headers = headers

    def __repr__(self) -> str:
        return f"RecordedRequest({self.method} {self.path} {dict.__repr__(self)})"


class _ScriptedServer:
    """What the two fakes share.

    Lifecycle: an aiohttp app on 127.0.0.1:<ephemeral>, started in the current loop
    (`start`/`stop`, `async with`) or in a private loop on a daemon thread
    (`start_in_thread`/`stop_thread`) for tests that drive a subprocess.

    Replies: queued ones first (`enqueue`), then `script`.
    """

    def __init__(self, default_script: Script) -> None:
        self.script: Script = default_script
        self._queue: collections.deque[Reply] = collections.deque()  # thread-safe append/pop
        self._counters: dict[str, itertools.count[int]] = {}
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop serving requests
        self._thread: threading.Thread | None = None  # set by start_in_thread()

    def _make_app(self) -> web.Application:
        raise NotImplementedError

    async def _before_cleanup(self) -> None:
        """Hook: release long-lived connections before the runner shuts down."""

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the fake server is not started")
        return self._base_url

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.base_url).port or 0

    async def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1:``port`` (0: any free port); returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("the fake server is already started")
        self._stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        # A short shutdown_timeout: hanging handlers are woken by _stopping, anything
        # else still in flight is cancelled instead of holding stop() for 60 s.
        runner = web.AppRunner(
            self._make_app(), handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._base_url = f"http://{host}:{port}/v1"
        return self._base_url

    async def stop(self) -> None:
        if self._runner is None:
            return
        assert self._stopping is not None
        self._stopping.set()
        await self._before_cleanup()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self, timeout: float = 10.0) -> str:
        """Run the server in its own event loop on a daemon thread; returns the base URL."""
        if self._thread is not None:
            raise RuntimeError("the fake server is already running in a thread")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name=f"{type(self).__name__}-loop", daemon=True
        )
        thread.start()
        self._thread, self._loop = thread, loop
        return asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout)

    def stop_thread(self, timeout: float = 10.0) -> None:
        if self._thread is None or self._loop is None:
            return
        loop, thread = self._loop, self._thread
        try:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                loop.close()
            self._thread = self._loop = None

    async def _wait_until_stopped(self) -> None:
        assert self._stopping is not None
        await self._stopping.wait()

    def _new_id(self, prefix: str) -> str:
        counter = self._counters.setdefault(prefix, itertools.count(1))
        return f"{prefix}_{next(counter)}"

    def enqueue(self, *replies: Reply) -> None:
        """Queue replies for the next turns, in order; the script answers once it is empty."""
        self._queue.extend(replies)

    @property
    def pending_replies(self) -> int:
        return len(self._queue)

    async def _next_reply(self, arg: Any) -> Reply:
        try:
            return self._queue.popleft()
        except IndexError:
            pass
        reply = self.script(arg)
        if inspect.isawaitable(reply):
            reply = await reply
        return reply  # type: ignore[return-value]


# --------------------------------------------------------------------------------------
# The chat completions fake
# --------------------------------------------------------------------------------------


class FakeOpenAI(_ScriptedServer):
    """OpenAI-compatible `/v1/models` and `/v1/chat/completions` (streamed or not), and
    the audio endpoints the STT and TTS plugins use (`/v1/audio/transcriptions` answers
    `transcript`, `/v1/audio/speech` espeak-ng speech of the text).

    >>> async with FakeOpenAI() as fake:
    ...     fake.enqueue(tool_call("get_weather", {"city": "Paris"}), text("Sunny."))
    ...     llm = openai.LLM(base_url=fake.base_url, api_key="x")
    """

    def __init__(
        self,
        script: Script | None = None,
        *,
        model_ids: Iterable[str] = ("gpt-4.1", "gpt-4o-mini"),
    ) -> None:
        super().__init__(script or echo_script)
        self.model_ids = list(model_ids)
        self.requests: list[RecordedRequest] = []
        self.transcript = "hello from the fake transcriber"  # what /v1/audio/transcriptions hears
        self.spoken: list[str] = []  # every text /v1/audio/speech synthesized
        self.speech_failures = 0  # answer the next N speech requests with 503
        # a model that answers on its own, outside the queue (a claims judge asked after the
        # turn, while the agent's model answers from the queue): model id -> its script
        self.by_model: dict[str, Script] = {}

    # -- scripting ---------------------------------------------------------------------

    def use_tool_then_answer(self, tool_name: str, args: dict[str, Any] | None = None) -> None:
        """Script the usual one-tool turn: call `tool_name(**args)`; once the last message is
        the tool's result, answer `Result: <tool output>`."""
        self.script = _chat_tool_then_answer(tool_name, dict(args or {}))

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """Only the chat completion requests (AgentSession also sends GET /models to prewarm)."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # -- HTTP --------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._handle_models)
        app.router.add_post("/v1/chat/completions", self._handle_chat)
        app.router.add_post("/v1/audio/speech", self._handle_speech)
        app.router.add_post("/v1/audio/transcriptions", self._handle_transcription)
        return app

    def audio_requests(self, kind: str) -> list[RecordedRequest]:
        """Requests to /v1/audio/<kind>: ``speech`` (TTS) or ``transcriptions`` (STT)."""
        return [r for r in self.requests if r.path == f"/v1/audio/{kind}"]

    async def _handle_speech(self, request: web.Request) -> web.StreamResponse:
        """espeak-ng speech of ``input`` at 24 kHz (OpenAI's rate) in the requested
        ``response_format`` (pcm, wav or mp3), streamed as SSE ``speech.audio.delta``
        events when ``stream_format`` is ``sse`` (what gpt-4o-mini-tts is asked for)."""
        from . import espeak

        body = await request.json()
        self._record(request, body)
        if self.speech_failures:
            self.speech_failures -= 1
            return web.json_response(error(503, "fake speech endpoint unavailable").body(), status=503)
        pcm = espeak.speak(body.get("input", ""), 24000) if body.get("input", "").strip() else b""
        fmt = body.get("response_format") or "mp3"
        if fmt == "pcm":
            audio, mime = pcm, "audio/pcm"
        elif fmt == "wav":
            audio, mime = espeak.wav_bytes(pcm, 24000), "audio/wav"
        elif fmt == "mp3":
            audio, mime = espeak.mp3_bytes(pcm, 24000), "audio/mpeg"
        else:
            return web.json_response(error(400, f"response_format {fmt} is not supported by the fake").body(),
                                     status=400)
        self.spoken.append(body.get("input", ""))
        if body.get("stream_format") != "sse":
            return web.Response(body=audio, content_type=mime)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        step = 4800  # bytes of audio per event
        for i in range(0, len(audio), step):
            delta = {"type": "speech.audio.delta", "audio": base64.b64encode(audio[i:i + step]).decode()}
            await resp.write(f"data: {json.dumps(delta)}\n\n".encode())
        done = {"type": "speech.audio.done", "usage": {"input_tokens": 5, "output_tokens": 10, "total_tokens": 15}}
        await resp.write(f"data: {json.dumps(done)}\n\n".encode())
        await resp.write_eof()
        return resp

    async def _handle_transcription(self, request: web.Request) -> web.Response:
        form = await request.post()  # multipart: the WAV file and the options
        self._record(request, {k: v for k, v in form.items() if isinstance(v, str)})
        return web.json_response({"text": self.transcript})

    def _record(self, request: web.Request, body: dict[str, Any]) -> RecordedRequest:
        rec = RecordedRequest(
            body, method=request.method, path=request.path, headers=dict(request.headers)
        )
        self.requests.append(rec)
        return rec

    async def _handle_models(self, request: web.Request) -> web.Response:
        self._record(request, {})
        created = int(time.time())
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": created, "owned_by": "fake"}
                    for m in self.model_ids
                ],
            }
        )

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response(error(400, "invalid JSON body").body(), status=400)
        rec = self._record(request, body)
        own = self.by_model.get(str(body.get("model")))
        reply = own(rec) if own is not None else await self._next_reply(rec)
        if inspect.isawaitable(reply):
            reply = await reply

        while True:
            if isinstance(reply, DelayReply):
                await asyncio.sleep(reply.seconds)
                reply = reply.reply
            elif isinstance(reply, HangReply):
                await self._wait_until_stopped()
                return web.json_response(error(503, "fake server stopped").body(), status=503)
            else:
                break

        if isinstance(reply, ErrorReply):
            return web.json_response(reply.body(), status=reply.status)

        completion_id = self._new_id("chatcmpl")
        model = body.get("model", "gpt-4.1")
        # Fix the call ids now, so a streamed and a non-streamed answer agree.
        calls: list[tuple[str, ToolCall]] = []
        if isinstance(reply, ToolCallsReply):
            calls = [(c.call_id or self._new_id("call"), c) for c in reply.calls]

        if not body.get("stream"):
            return web.json_response(self._completion(completion_id, model, reply, calls))
        return await self._stream(request, completion_id, model, reply, calls, body)

    @staticmethod
    def _usage(prompt: int = 10, completion: int = 5) -> dict[str, Any]:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }

    def _completion(
        self, completion_id: str, model: str, reply: Reply, calls: list[tuple[str, ToolCall]]
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if isinstance(reply, TextReply):
            message["content"] = reply.text
            finish = "stop"
        else:
            message["tool_calls"] = [
                {
                    "id": cid,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for cid, c in calls
            ]
            finish = "tool_calls"
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": self._usage(),
        }

    async def _stream(
        self,
        request: web.Request,
        completion_id: str,
        model: str,
        reply: Reply,
        calls: list[tuple[str, ToolCall]],
        body: dict[str, Any],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        created = int(time.time())
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def send(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> None:
            chunk: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": choices,
            }
            if include_usage:
                chunk["usage"] = usage  # null on every chunk but the last, as OpenAI does
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

        if isinstance(reply, TextReply):
            await send(choice({"role": "assistant", "content": "", "refusal": None}))
            for word in _words(reply.text):
                await send(choice({"content": word}))
            await send(choice({}, "stop"))
        else:
            await send(choice({"role": "assistant", "content": None, "refusal": None}))
            for index, (cid, call) in enumerate(calls):
                # First delta of a call names it; the arguments follow in pieces.
                head = {
                    "index": index,
                    "id": cid,
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
                await send(choice({"tool_calls": [head]}))
                for piece in _pieces(json.dumps(call.arguments)):
                    part = {"index": index, "function": {"arguments": piece}}
                    await send(choice({"tool_calls": [part]}))
            await send(choice({}, "tool_calls"))

        if include_usage:
            await send([], self._usage())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fakes.openai_chat --port N [--tool NAME --args JSON]``: the
    chat completions (and speech, transcription) fake on its own. It answers
    ``echo: <what the user said>``, or with ``--tool`` calls that tool and then
    answers ``Result: <its output>``."""
    import argparse

    from ._standalone import run_standalone

    parser = argparse.ArgumentParser(prog="python -m tests.fakes.openai_chat", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tool", help="the tool the model calls on every user turn")
    parser.add_argument("--args", default="{}", help="its arguments, a JSON object")
    args = parser.parse_args(argv)
    fake = FakeOpenAI()
    if args.tool:
        fake.use_tool_then_answer(args.tool, json.loads(args.args))
    run_standalone(fake, args.port, lambda f: f"openai base_url: {f.base_url}")


if __name__ == "__main__":
    main()
