"""A fake LiveKit server: the agent worker protocol only (``/agent`` websocket).

Real ``serve`` registrations (livekit's own connection code) connect to it as to
LiveKit Cloud: it answers each ``register`` with a worker id, and a test offers
jobs with ``offer()``, which sends an ``AvailabilityRequest`` to the worker that
registered the job's agent name, waits for the answer and, if the job is
accepted, assigns it. Every message a worker sends is kept (``messages``).

The assigned job's room URL points back here, where no room exists: the job
process starts, routes and reads its spec (what the tests check), then fails to
join the room. Run alone: ``python -m tests.fakes.livekit_server --port 7880``.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web


@dataclass
class Worker:
    agent_name: str
    ws: web.WebSocketResponse
    worker_id: str


@dataclass
class FakeLiveKit:
    host: str = "127.0.0.1"
    port: int = 0
    workers: list[Worker] = field(default_factory=list)
    messages: list[tuple[str, Any]] = field(default_factory=list)  # (agent_name, WorkerMessage)
    _answers: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> str:
        app = web.Application()
        app.add_routes([web.get("/agent", self._agent)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _agent(self, request: web.Request) -> web.WebSocketResponse:
        from livekit.protocol import agent

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        worker: Worker | None = None
        async for raw in ws:
            if raw.type != WSMsgType.BINARY:
                continue
            msg = agent.WorkerMessage()
            msg.ParseFromString(raw.data)
            which = msg.WhichOneof("message")
            if which == "register":
                worker = Worker(msg.register.agent_name, ws, f"AW_{len(self.workers) + 1}")
                self.workers.append(worker)
                reply = agent.ServerMessage()
                reply.register.worker_id = worker.worker_id
                reply.register.server_info.version = "fake"
                await ws.send_bytes(reply.SerializeToString())
                continue
            self.messages.append((worker.agent_name if worker else "", msg))
            if which == "availability":
                answer = self._answers.pop(msg.availability.job_id, None)
                if answer is not None and not answer.done():
                    answer.set_result(msg.availability)
        if worker in self.workers:
            self.workers.remove(worker)
        return ws

    async def _offer(self, job: Any, timeout: float) -> Any:
        from livekit.protocol import agent

        matching = [w for w in self.workers if w.agent_name == job.agent_name]
        if not matching:
            raise LookupError(f"no worker registered {job.agent_name!r}")
        answer = asyncio.get_running_loop().create_future()
        self._answers[job.id] = answer
        request = agent.ServerMessage()
        request.availability.job.CopyFrom(job)
        await matching[0].ws.send_bytes(request.SerializeToString())
        response = await asyncio.wait_for(answer, timeout)
        if response.available:
            assignment = agent.ServerMessage()
            assignment.assignment.job.CopyFrom(job)
            assignment.assignment.url = self.url
            assignment.assignment.token = "fake-token"
            await matching[0].ws.send_bytes(assignment.SerializeToString())
        return response

    # -- from a test's thread ---------------------------------------------------------

    def offer(self, job_id: str, agent_name: str, *, metadata: str = "", room: str = "room-1",
              room_metadata: str = "", attributes: dict[str, str] | None = None, timeout: float = 20.0) -> Any:
        """Offer a job to whoever registered ``agent_name``; returns livekit's
        ``AvailabilityResponse`` (``.available``), assigning the job if accepted.
        ``attributes``: the job is for a participant (JT_PUBLISHER) with these."""
        from livekit.protocol import agent, models

        job = agent.Job(id=job_id, type=agent.JobType.JT_ROOM, agent_name=agent_name, metadata=metadata,
                        room=models.Room(sid=f"RM_{room}", name=room, metadata=room_metadata))
        if attributes is not None:
            job.type = agent.JobType.JT_PUBLISHER
            job.participant.CopyFrom(models.ParticipantInfo(identity="caller", attributes=attributes))
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self._offer(job, timeout), self._loop).result(timeout + 5)

    def registered_names(self) -> list[str]:
        return [w.agent_name for w in list(self.workers)]

    def start_in_thread(self) -> str:
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="FakeLiveKit-loop", daemon=True)
        self._thread.start()
        self._loop = loop
        return asyncio.run_coroutine_threadsafe(self.start(), loop).result(10)

    def stop_thread(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7880)
    args = parser.parse_args()
    fake = FakeLiveKit(port=args.port)

    async def run() -> None:
        print(f"fake LiveKit on {await fake.start()}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
