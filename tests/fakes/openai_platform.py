"""Chat completions and the Realtime websocket on one port, as api.openai.com has them.

``OPENAI_BASE_URL`` points every OpenAI client at one host: the chat LLM and the
Realtime model of a shipped example both follow it. ``FakeOpenAIPlatform`` is a
``FakeRealtime`` (websocket at ``/v1/realtime``, with its faults: refuse, drop) that
also answers ``/v1/models`` and ``/v1/chat/completions`` through ``self.chat``, a
``FakeOpenAI`` sharing its loop, so tests script and inspect each side as usual.
"""

from __future__ import annotations

from aiohttp import web

from .openai_chat import FakeOpenAI
from .openai_realtime import FakeRealtime

__all__ = ["FakeOpenAIPlatform"]


class FakeOpenAIPlatform(FakeRealtime):
    def __init__(self) -> None:
        super().__init__()
        self.chat = FakeOpenAI()

    def _make_app(self) -> web.Application:
        app = super()._make_app()
        app.router.add_get("/v1/models", self.chat._handle_models)
        app.router.add_post("/v1/chat/completions", self.chat._handle_chat)
        return app

    async def start(self) -> str:
        base_url = await super().start()
        # the chat handlers run in this server's loop and stop with it (hang() waits on _stopping)
        self.chat._loop, self.chat._stopping, self.chat._base_url = self._loop, self._stopping, base_url
        return base_url
