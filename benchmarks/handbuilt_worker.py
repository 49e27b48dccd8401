"""The hand-built livekit-agents program `concurrent_calls.py` measures voice-runtime
against: what a developer writes from livekit's documentation to take browser-style
calls, with the same providers, the same audio path and one process per call.

- one livekit ``AgentServer`` (process executor, forkserver, one prewarmed process,
  silero VAD loaded in ``prewarm`` as livekit's examples do), run unregistered;
- an aiohttp WebSocket ``GET /call``: each connection starts a fake job
  (``simulate_job``) whose room metadata names this process's unix socket and a
  token; the job connects back, and the WebSocket and the job's connection are
  relayed frame for frame (the framing and the microphone/speaker classes are
  voice-runtime's ``session/browser_audio.py``, so the audio path is the same
  code on both sides: only what runs the session differs);
- the job: ``AgentSession(stt=deepgram.STT, llm=openai.LLM, tts=cartesia.TTS,
  vad=<prewarmed silero>)`` with ``Agent(tools=[mcp.MCPToolset(MCPServerStdio)])``
  (livekit's documented MCP way: a server process per call).

    python benchmarks/handbuilt_worker.py --port 8500 --stt URL --llm URL --tts URL --mcp '["CMD", "ARG"]'

Prints ``ready <port>`` on stdout once it takes calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
from typing import Any

from livekit.agents import JobContext, JobProcess

# the job process imports this file as __mp_main__: only definitions at the top level

INSTRUCTIONS = "You are the front desk."


def prewarm(proc: JobProcess) -> None:
    from livekit.plugins import silero

    proc.userdata["vad"] = silero.VAD.load()


async def entrypoint(ctx: JobContext) -> None:
    from livekit.agents import Agent, AgentSession, mcp
    from livekit.plugins import cartesia, deepgram, openai

    from voice_runtime.session.browser_audio import AUDIO, BrowserLink, browser_mic, browser_speaker, read_frame

    call = json.loads(ctx.job.room.metadata)
    reader, writer = await asyncio.open_unix_connection(call["socket"])
    writer.write(call["token"].encode() + b"\n")
    await writer.drain()
    link = BrowserLink(reader, writer)
    mic, speaker = browser_mic(), browser_speaker(link)
    session = AgentSession(
        stt=deepgram.STT(base_url=call["stt"], api_key="dg-key"),
        llm=openai.LLM(model="gpt-4o-mini", base_url=call["llm"], api_key="sk-key"),
        tts=cartesia.TTS(base_url=call["tts"], api_key="ct-key", voice="v1"),
        vad=ctx.proc.userdata["vad"],
        turn_handling={"turn_detection": "vad"},
        aec_warmup_duration=None,
    )
    session.input.audio, session.output.audio = mic, speaker
    tools = mcp.MCPToolset(id="desk", mcp_server=mcp.MCPServerStdio(call["mcp"][0], call["mcp"][1:]))
    await session.start(Agent(instructions=INSTRUCTIONS, tools=[tools]))
    link.post({"type": "ready", "pid": os.getpid()})
    try:
        while (got := await read_frame(reader)) is not None:
            kind, payload = got
            if kind == AUDIO:
                mic.push(payload)
    finally:
        mic.close()
        await session.aclose()
        await link.aclose()
        ctx.shutdown(reason="call ended")


async def main(args: argparse.Namespace) -> None:
    from aiohttp import WSMsgType, web
    from livekit.agents import AgentServer, JobExecutorType
    from livekit.protocol import models

    from voice_runtime.session.browser_audio import AUDIO, MESSAGE, frame, read_frame

    server = AgentServer(job_executor_type=JobExecutorType.PROCESS, num_idle_processes=1, setup_fnc=prewarm,
                         load_threshold=float("inf"), initialize_process_timeout=60.0, host="127.0.0.1", port=0)
    server.rtc_session(entrypoint)
    waiting: dict[str, asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    async def joined(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        token = (await reader.readline()).strip().decode()
        future = waiting.pop(token, None)
        if future is None or future.done():
            writer.close()
            return
        future.set_result((reader, writer))

    folder = tempfile.mkdtemp(prefix="handbuilt-")
    path = os.path.join(folder, "calls.sock")
    unix = await asyncio.start_unix_server(joined, path)

    async def call(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024)
        await ws.prepare(request)
        token = secrets.token_hex(8)
        future = waiting[token] = asyncio.get_running_loop().create_future()
        metadata = json.dumps({"socket": path, "token": token, "stt": args.stt, "llm": args.llm, "tts": args.tts,
                               "mcp": json.loads(args.mcp)})
        await server.simulate_job(f"call-{token}", fake_job=True,
                                  room_info=models.Room(sid=f"RM_{token}", name=f"call-{token}", metadata=metadata))
        reader, writer = await asyncio.wait_for(future, 120)

        async def to_job() -> None:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    writer.write(frame(AUDIO, msg.data))
                elif msg.type == WSMsgType.TEXT:
                    writer.write(frame(MESSAGE, msg.data.encode()))
                await writer.drain()

        async def to_page() -> None:
            while (got := await read_frame(reader)) is not None:
                kind, payload = got
                if kind == AUDIO:
                    await ws.send_bytes(payload)
                else:
                    await ws.send_str(payload.decode())

        tasks = [asyncio.ensure_future(to_job()), asyncio.ensure_future(to_page())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            writer.close()
            await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/call", call)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    started = asyncio.Event()
    server.on("worker_started", lambda *_: started.set())
    run = asyncio.create_task(server.run(devmode=False, unregistered=True))
    await started.wait()
    print(f"ready {args.port}", flush=True)
    stop = asyncio.Event()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    unix.close()
    await runner.cleanup()
    await server.aclose()
    with contextlib.suppress(BaseException):
        await run
    with contextlib.suppress(OSError):
        os.unlink(path)
        os.rmdir(folder)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stt", required=True, help="the Deepgram listen URL")
    parser.add_argument("--llm", required=True, help="the OpenAI base URL")
    parser.add_argument("--tts", required=True, help="the Cartesia root URL")
    parser.add_argument("--mcp", required=True, help='the stdio MCP server: a JSON list ["command", "arg", ...]')
    options = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(options))
