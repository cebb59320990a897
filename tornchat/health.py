"""``GET /health``: dependency states and live connections, 200 or 503."""

from __future__ import annotations

from typing import TYPE_CHECKING

import tornado.web

if TYPE_CHECKING:
    from tornchat.app import ChatApplication


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, chat: ChatApplication) -> None:
        self.chat = chat

    async def get(self) -> None:
        status, body = await self.chat.health()
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)
