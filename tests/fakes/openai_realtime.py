"""A fake OpenAI Realtime API (GA event protocol, text and audio) for offline tests.

`FakeRealtime` serves a websocket at `/v1/realtime`, which is where the real
`livekit.plugins.openai.realtime.RealtimeModel(base_url="http://127.0.0.1:P/v1")` connects
(`ws://127.0.0.1:P/v1/realtime?model=...`). It keeps a conversation per connection, as the
real service does, and answers each `response.create` with the next scripted `Reply`
(the helpers of `openai_chat`: `text`, `tool_call`, `tool_calls`, `error`, `hang`, `delay`).

Events follow the order the plugin documents and expects (livekit/agents/llm/_realtime/
openai.py): `response.created`, `response.output_item.added`, `conversation.item.added`,
`response.content_part.added`, `response.output_text.delta`... , `response.output_text.done`,
`response.content_part.done`, `response.output_item.done`, `conversation.item.done`,
`response.done`.

Audio: with `audio` in the output modalities a message is spoken: espeak-ng PCM16 at
24 kHz in `response.output_audio.delta` events, with its words in
`response.output_audio_transcript.delta`. The caller's `input_audio_buffer.append`
audio is listened to as the server's VAD would: speech followed by `end_silence_ms` of
quiet is `speech_started` / `speech_stopped` / `committed`, a user item whose
transcript is the next of `transcripts` (else `transcript`), and, as server turn
detection does by default, a response. Speech starting during a response cancels it.

    python -m tests.fakes.openai_realtime --port 8404
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import copy
import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

from .listening import Heard, Listener
from .openai_chat import (
    DelayReply,
    ErrorReply,
    HangReply,
    Reply,
    Script,
    TextReply,
    ToolCall,
    ToolCallsReply,
    _pieces,
    _ScriptedServer,
    _words,
    delay,
    error,
    hang,
    text,
    tool_call,
    tool_calls,
)

__all__ = [
    "FakeRealtime",
    "delay",
    "echo_conversation_script",
    "error",
    "hang",
    "text",
    "tool_call",
    "tool_calls",
]

_T = TypeVar("_T")


def _item_text(item: dict[str, Any]) -> str:
    parts = []
    for part in item.get("content") or []:
        for key in ("text", "transcript"):
            if isinstance(part.get(key), str):
                parts.append(part[key])
                break
    return "".join(parts)


def echo_conversation_script(conversation: list[dict[str, Any]]) -> Reply:
    """Default script: answer `echo: <last user message>`."""
    for item in reversed(conversation):
        if item.get("type") == "message" and item.get("role") == "user":
            return text(f"echo: {_item_text(item)}")
    return text("echo: ")


def _realtime_tool_then_answer(
    tool_name: str, args: dict[str, Any]
) -> Callable[[list[dict[str, Any]]], Reply]:
    def script(conversation: list[dict[str, Any]]) -> Reply:
        if conversation and conversation[-1].get("type") == "function_call_output":
            return text(f"Result: {conversation[-1].get('output', '')}")
        return tool_call(tool_name, args)

    return script


def _deep_merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """`session.update` is a partial update: nested objects (audio.input...) merge."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


@dataclass(eq=False)
class _Connection:
    """One live websocket and the conversation the server keeps for it."""

    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    session: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_response: asyncio.Task[None] | None = None  # responses run one after another
    active_response: asyncio.Task[None] | None = None  # the one response.cancel targets
    listener: Listener | None = None  # the caller's audio, as the server's VAD follows it
    speech_item: str | None = None  # the user item being spoken

    def index_of(self, item_id: str) -> int | None:
        for i, item in enumerate(self.items):
            if item.get("id") == item_id:
                return i
        return None

    def previous_id(self, index: int) -> str | None:
        return self.items[index - 1]["id"] if index > 0 else None

    def abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


class FakeRealtime(_ScriptedServer):
    """OpenAI Realtime websocket server (GA protocol, text or audio) with fault injection.

    Scripting: `enqueue(*replies)` queues replies for the next responses; once the queue
    is empty `script(conversation)` answers, where `conversation` is a copy of the items
    the server holds for that connection (OpenAI item dicts, oldest first).

    Replies: `delay(s, r)` holds the whole response, `response.created` included;
    `hang()` never answers the `response.create` (the plugin gives up after its fixed
    10 s generate_reply timeout); `error(...)` sends `response.created`, then
    `response.done` with status "failed" (a fatal `code`, e.g. "insufficient_quota",
    makes the plugin end the session).

    Faults: `refuse_connections = True` answers websocket upgrades with HTTP 503;
    `await drop_all()` aborts every live socket; `drop_after_responses = N` aborts the
    socket that has just sent the N-th `response.done` (counted over all connections, so
    it fires once).
    """

    def __init__(self, script: Script | None = None) -> None:
        super().__init__(script or echo_conversation_script)
        self.events: list[dict[str, Any]] = []  # every client event, in arrival order
        self.handshakes: list[dict[str, Any]] = []  # every upgrade attempt, refused ones too
        self.refuse_connections = False
        self.drop_after_responses: int | None = None
        self.responses_done = 0
        self.transcript = "hello from the fake realtime"  # what the caller's audio said
        self.transcripts: collections.deque[str] = collections.deque()
        self.heard: list[str] = []  # transcripts of the caller's audio turns, in order
        self.end_silence_ms = 400
        self.threshold = 500.0
        self.audio_chunks = 0  # output_audio.delta events sent
        self._conns: list[_Connection] = []  # live connections, oldest first
        self._last_conn: _Connection | None = None

    # -- scripting and inspection ------------------------------------------------------

    def use_tool_then_answer(self, tool_name: str, args: dict[str, Any] | None = None) -> None:
        """Call `tool_name(**args)`; once the last item is its output, answer
        `Result: <output>`."""
        self.script = _realtime_tool_then_answer(tool_name, dict(args or {}))

    @property
    def connection_count(self) -> int:
        """Websockets accepted so far (a reconnect adds one)."""
        return sum(1 for h in self.handshakes if h["accepted"])

    @property
    def live_connections(self) -> int:
        return len(self._conns)

    @property
    def conversation(self) -> list[dict[str, Any]]:
        """Items of the most recent connection's conversation."""
        return copy.deepcopy(self._last_conn.items) if self._last_conn else []

    @property
    def session_config(self) -> dict[str, Any]:
        """The most recent connection's session, after every `session.update`."""
        return copy.deepcopy(self._last_conn.session) if self._last_conn else {}

    def events_of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == event_type]

    # -- fault injection ---------------------------------------------------------------

    async def drop_all(self) -> None:
        """Abort every live socket's TCP connection (no close frame), as a network failure
        would. Callable from any loop, also when the fake runs in a thread."""
        await self._in_server_loop(self._drop_all)

    async def broadcast(self, event: dict[str, Any]) -> None:
        """Send a raw server event (e.g. an `error`) to every live connection."""

        async def send_all() -> None:
            for conn in list(self._conns):
                await self._send(conn, event)

        await self._in_server_loop(send_all)

    async def _drop_all(self) -> None:
        for conn in list(self._conns):
            conn.abort()

    async def _in_server_loop(self, fn: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        # With start_in_thread() the sockets belong to the server's own loop.
        loop = self._loop
        if loop is None or loop is asyncio.get_running_loop():
            return await fn()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fn(), loop))

    # -- server ------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/realtime", self._handle_ws)
        app.router.add_get("/realtime", self._handle_ws)
        return app

    async def _before_cleanup(self) -> None:
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=WSCloseCode.GOING_AWAY), 1.0)
            conn.abort()

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        handshake = {
            "path": request.path,
            "query": dict(request.query),
            "headers": dict(request.headers),
            "accepted": not self.refuse_connections,
        }
        self.handshakes.append(handshake)
        if self.refuse_connections:
            return web.json_response(
                error(503, "fake realtime server refuses connections").body(), status=503
            )

        ws = web.WebSocketResponse(autoping=True, timeout=1.0)
        await ws.prepare(request)
        session = self._initial_session(request)
        conn = _Connection(ws=ws, transport=request.transport, session=session)
        self._conns.append(conn)
        self._last_conn = conn
        try:
            await self._send(conn, {"type": "session.created", "session": conn.session})
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    event = json.loads(msg.data)
                except json.JSONDecodeError:
                    await self._send_error(conn, "invalid_json", "could not parse the event")
                    continue
                self.events.append(event)
                await self._on_client_event(conn, event)
        finally:
            self._conns.remove(conn)
            for task in (conn.active_response, conn.last_response):
                if task is not None:
                    task.cancel()
        return ws

    def _initial_session(self, request: web.Request) -> dict[str, Any]:
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self._new_id("sess"),
            "model": request.query.get("model", "gpt-realtime"),
            "output_modalities": ["audio"],
            "instructions": "",
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "expires_at": 0,
            "include": None,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": {"type": "server_vad"},
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "voice": "marin",
                    "speed": 1.0,
                },
            },
        }

    async def _send(self, conn: _Connection, event: dict[str, Any]) -> None:
        # Serialised at once: the event is a snapshot, later changes to its items don't leak.
        data = json.dumps({"event_id": self._new_id("event"), **event})
        if conn.ws.closed:
            return
        async with conn.send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.send_str(data)

    async def _send_error(
        self, conn: _Connection, code: str, message: str, event_id: str | None = None
    ) -> None:
        await self._send(
            conn,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": code,
                    "message": message,
                    "param": None,
                    "event_id": event_id,
                },
            },
        )

    # -- client events -----------------------------------------------------------------

    async def _on_client_event(self, conn: _Connection, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "session.update":
            _deep_merge(conn.session, event.get("session") or {})
            await self._send(conn, {"type": "session.updated", "session": conn.session})
        elif kind == "conversation.item.create":
            await self._create_item(conn, event)
        elif kind == "conversation.item.delete":
            await self._delete_item(conn, event)
        elif kind == "conversation.item.truncate":
            await self._send(
                conn,
                {
                    "type": "conversation.item.truncated",
                    "item_id": event.get("item_id"),
                    "content_index": event.get("content_index", 0),
                    "audio_end_ms": event.get("audio_end_ms", 0),
                },
            )
        elif kind == "response.create":
            prev = conn.last_response
            conn.last_response = asyncio.create_task(self._respond(conn, event, prev))
        elif kind == "response.cancel":
            active = conn.active_response
            if active is not None and not active.done():
                active.cancel()
            else:
                # the plugin ignores this one, as it should
                await self._send_error(
                    conn, "response_cancel_not_active",
                    "Cancellation failed: no active response found", event.get("event_id"),
                )
        elif kind == "input_audio_buffer.append":
            await self._listen(conn, base64.b64decode(event.get("audio") or ""))
        elif kind == "input_audio_buffer.commit":
            await self._commit_speech(conn)
        elif kind == "input_audio_buffer.clear":
            conn.speech_item, conn.listener = None, None
            await self._send(conn, {"type": "input_audio_buffer.cleared"})
        # anything else: recorded in `events`, otherwise ignored

    # -- the caller's audio --------------------------------------------------------------

    async def _listen(self, conn: _Connection, pcm: bytes) -> None:
        if conn.listener is None:
            # 60 ms of sound in a row: a server VAD ignores clicks
            conn.listener = Listener(24000, threshold=self.threshold, end_silence_ms=self.end_silence_ms,
                                     loud_windows=3)
        for heard in conn.listener.feed(pcm):
            if heard.kind == "started":
                conn.speech_item = self._new_id("item")
                await self._send(conn, {"type": "input_audio_buffer.speech_started",
                                        "audio_start_ms": int(heard.start * 1000), "item_id": conn.speech_item})
                active = conn.active_response
                if active is not None and not active.done():
                    active.cancel()  # turn detection's interrupt_response
            else:
                await self._commit_speech(conn, heard)

    async def _commit_speech(self, conn: _Connection, heard: Heard | None = None) -> None:
        """The utterance ``heard`` (or, on a client commit, the one under way) is a user item."""
        if heard is None and conn.listener is not None and conn.listener.start is not None:
            heard = conn.listener.take()
        item_id, conn.speech_item = conn.speech_item, None
        if item_id is None or heard is None:
            return
        await self._send(conn, {"type": "input_audio_buffer.speech_stopped",
                                "audio_end_ms": int(heard.end * 1000), "item_id": item_id})
        previous = conn.items[-1]["id"] if conn.items else None
        await self._send(conn, {"type": "input_audio_buffer.committed", "previous_item_id": previous,
                                "item_id": item_id})
        said = self.transcripts.popleft() if self.transcripts else self.transcript
        self.heard.append(said)
        item = {"id": item_id, "object": "realtime.item", "type": "message", "status": "completed",
                "role": "user", "content": [{"type": "input_audio", "transcript": None}]}
        conn.items.append(item)
        for kind in ("conversation.item.added", "conversation.item.done"):
            await self._send(conn, {"type": kind, "previous_item_id": previous, "item": item})
        item["content"] = [{"type": "input_audio", "transcript": said}]
        await self._send(conn, {"type": "conversation.item.input_audio_transcription.completed",
                                "item_id": item_id, "content_index": 0, "transcript": said,
                                "usage": {"type": "duration", "seconds": round(heard.end - heard.start, 3)}})
        turn = (conn.session.get("audio") or {}).get("input", {}).get("turn_detection")
        if turn is not None and turn.get("create_response", True) is not False:
            prev = conn.last_response
            conn.last_response = asyncio.create_task(self._respond(conn, {"type": "response.create"}, prev))

    async def _create_item(self, conn: _Connection, event: dict[str, Any]) -> None:
        item = copy.deepcopy(event.get("item") or {})  # `events` keeps what the client sent
        item.setdefault("id", self._new_id("item"))
        item.setdefault("object", "realtime.item")
        item.setdefault("status", "completed")
        if conn.index_of(item["id"]) is not None:
            await self._send_error(
                conn, "item_create_duplicate_item_id",
                f"Item with id '{item['id']}' already exists.", event.get("event_id"),
            )
            return

        prev_id = event.get("previous_item_id")
        if prev_id == "root":
            index = 0
        elif prev_id is None:
            index = len(conn.items)
        elif (prev_index := conn.index_of(prev_id)) is not None:
            index = prev_index + 1
        else:
            await self._send_error(
                conn, "item_not_found",
                f"Item with id '{prev_id}' not found.", event.get("event_id"),
            )
            return

        conn.items.insert(index, item)
        previous = conn.previous_id(index)
        for kind in ("conversation.item.added", "conversation.item.done"):
            await self._send(conn, {"type": kind, "previous_item_id": previous, "item": item})

    async def _delete_item(self, conn: _Connection, event: dict[str, Any]) -> None:
        item_id = event.get("item_id", "")
        index = conn.index_of(item_id)
        if index is None:
            await self._send_error(
                conn, "item_not_found",
                f"Item with id '{item_id}' not found.", event.get("event_id"),
            )
            return
        del conn.items[index]
        await self._send(conn, {"type": "conversation.item.deleted", "item_id": item_id})

    # -- responses ---------------------------------------------------------------------

    async def _respond(
        self, conn: _Connection, event: dict[str, Any], prev: asyncio.Task[None] | None
    ) -> None:
        if prev is not None:
            await asyncio.wait([prev])  # wait, without passing our cancellation on to it
        conn.active_response = asyncio.current_task()  # type: ignore[assignment]
        params = event.get("response") or {}
        response: dict[str, Any] = {
            "object": "realtime.response",
            "id": self._new_id("resp"),
            "status": "in_progress",
            "status_details": None,
            "output": [],
            "conversation_id": "conv_fake",
            "output_modalities": params.get("output_modalities")
            or conn.session.get("output_modalities", ["audio"]),
            "max_output_tokens": "inf",
            "audio": None,
            "usage": None,
            "metadata": params.get("metadata"),
        }
        created = False
        try:
            reply = await self._next_reply(copy.deepcopy(conn.items))
            while isinstance(reply, DelayReply):
                await asyncio.sleep(reply.seconds)
                reply = reply.reply
            if isinstance(reply, HangReply):
                await self._wait_until_stopped()
                return

            await self._send(conn, {"type": "response.created", "response": response})
            created = True
            if isinstance(reply, ErrorReply):
                response["status"] = "failed"
                response["status_details"] = {
                    "type": "failed",
                    "reason": None,
                    "error": {
                        "type": reply.error_type,
                        "code": reply.code or reply.error_type,
                        "message": reply.message,
                    },
                }
            elif isinstance(reply, TextReply):
                if "audio" in response["output_modalities"]:
                    await self._emit_spoken_message(conn, response, reply.text)
                else:
                    await self._emit_message(conn, response, reply.text)
                response["status"] = "completed"
            elif isinstance(reply, ToolCallsReply):
                for call in reply.calls:
                    await self._emit_function_call(conn, response, call)
                response["status"] = "completed"
            await self._finish(conn, response)
        except asyncio.CancelledError:
            if created and not conn.ws.closed:
                response["status"] = "cancelled"
                response["status_details"] = {"type": "cancelled", "reason": "client_cancelled"}
                await self._finish(conn, response, count=False)
            raise
        finally:
            if conn.active_response is asyncio.current_task():
                conn.active_response = None

    async def _emit_item(
        self,
        conn: _Connection,
        response: dict[str, Any],
        item: dict[str, Any],
        stream: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        """Announce an output item, let `stream` send its content, then complete it."""
        head = {"response_id": response["id"], "output_index": len(response["output"])}
        await self._send(conn, {"type": "response.output_item.added", **head, "item": item})
        previous = conn.items[-1]["id"] if conn.items else None
        conn.items.append(item)
        added = {"previous_item_id": previous, "item": item}
        await self._send(conn, {"type": "conversation.item.added", **added})
        await stream({**head, "item_id": item["id"]})
        item["status"] = "completed"
        response["output"].append(item)
        await self._send(conn, {"type": "response.output_item.done", **head, "item": item})
        await self._send(conn, {"type": "conversation.item.done", **added})

    def _assistant_item(self) -> dict[str, Any]:
        return {"id": self._new_id("item"), "object": "realtime.item", "type": "message",
                "status": "in_progress", "role": "assistant", "content": []}

    async def _emit_message(
        self, conn: _Connection, response: dict[str, Any], content: str
    ) -> None:
        item = self._assistant_item()  # content filled when done; the plugin builds the text from the deltas

        async def stream(where: dict[str, Any]) -> None:
            where = {**where, "content_index": 0}
            part = {"type": "text", "text": ""}
            await self._send(conn, {"type": "response.content_part.added", **where, "part": part})
            for word in _words(content):
                delta = {"type": "response.output_text.delta", **where, "delta": word}
                await self._send(conn, delta)
            await self._send(conn, {"type": "response.output_text.done", **where, "text": content})
            part = {"type": "text", "text": content}
            await self._send(conn, {"type": "response.content_part.done", **where, "part": part})
            item["content"] = [{"type": "output_text", "text": content}]

        await self._emit_item(conn, response, item, stream)

    async def _emit_spoken_message(
        self, conn: _Connection, response: dict[str, Any], content: str
    ) -> None:
        from . import espeak

        item = self._assistant_item()
        pcm = espeak.speak(content, 24000) if content.strip() else b""

        async def stream(where: dict[str, Any]) -> None:
            where = {**where, "content_index": 0}
            part = {"type": "audio", "transcript": ""}
            await self._send(conn, {"type": "response.content_part.added", **where, "part": part})
            for word in _words(content):
                await self._send(conn, {"type": "response.output_audio_transcript.delta", **where, "delta": word})
            step = 2400 * 2  # 100 ms
            for i in range(0, len(pcm), step):
                chunk = base64.b64encode(pcm[i:i + step]).decode()
                await self._send(conn, {"type": "response.output_audio.delta", **where, "delta": chunk})
                self.audio_chunks += 1
                await asyncio.sleep(0)  # a cancel (the caller barging in) lands between chunks
            await self._send(conn, {"type": "response.output_audio.done", **where})
            await self._send(conn, {"type": "response.output_audio_transcript.done", **where, "transcript": content})
            part = {"type": "audio", "transcript": content}
            await self._send(conn, {"type": "response.content_part.done", **where, "part": part})
            item["content"] = [{"type": "output_audio", "transcript": content}]

        await self._emit_item(conn, response, item, stream)

    async def _emit_function_call(
        self, conn: _Connection, response: dict[str, Any], call: ToolCall
    ) -> None:
        args_json = json.dumps(call.arguments)
        item: dict[str, Any] = {
            "id": self._new_id("item"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "call_id": call.call_id or self._new_id("call"),
            "name": call.name,
            "arguments": "",  # the real service announces the call before its arguments
        }

        async def stream(where: dict[str, Any]) -> None:
            where = {**where, "call_id": item["call_id"]}
            for piece in _pieces(args_json):
                delta = {"type": "response.function_call_arguments.delta", **where, "delta": piece}
                await self._send(conn, delta)
            done = {"type": "response.function_call_arguments.done", **where}
            await self._send(conn, {**done, "name": call.name, "arguments": args_json})
            item["arguments"] = args_json

        await self._emit_item(conn, response, item, stream)

    async def _finish(
        self, conn: _Connection, response: dict[str, Any], *, count: bool = True
    ) -> None:
        if response["status"] == "completed":
            response["usage"] = {
                "total_tokens": 15,
                "input_tokens": 10,
                "output_tokens": 5,
                "input_token_details": {"text_tokens": 10, "audio_tokens": 0, "cached_tokens": 0},
                "output_token_details": {"text_tokens": 5, "audio_tokens": 0},
            }
        await self._send(conn, {"type": "response.done", "response": response})
        if not count:
            return
        self.responses_done += 1
        if self.responses_done == self.drop_after_responses:
            conn.abort()


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fakes.openai_realtime --port N``: the realtime fake on its own
    (answers ``echo: <what the user said>``)."""
    import argparse

    from ._standalone import run_standalone

    parser = argparse.ArgumentParser(prog="python -m tests.fakes.openai_realtime", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    run_standalone(FakeRealtime(), args.port, lambda f: f"openai realtime base_url: {f.base_url}")


if __name__ == "__main__":
    main()
