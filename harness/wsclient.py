"""A small async WebSocket client for tests, on Tornado's own client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tornado.websocket import WebSocketClientConnection, websocket_connect

from tornchat.auth import mint_token


class ClosedError(AssertionError):
    """The server closed the connection while a frame was expected."""


class WsClient:
    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> WsClient:
        return cls(await websocket_connect(url, **kwargs))

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            frame = json.dumps(frame)
        await self.conn.write_message(frame, binary=isinstance(frame, bytes))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        text = await asyncio.wait_for(self.conn.read_message(), timeout)
        if text is None:
            raise ClosedError(f"closed: code={self.conn.close_code} "
                              f"reason={self.conn.close_reason}")
        return json.loads(text)

    async def expect(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        frame = await self.recv(timeout)
        assert frame["type"] == kind, frame
        return frame

    async def request(self, frame: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        await self.send(frame)
        return await self.recv(timeout)

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes; returns the close code."""
        async def drain() -> None:
            while await self.conn.read_message() is not None:
                pass
        await asyncio.wait_for(drain(), timeout)
        return self.conn.close_code

    async def nothing_within(self, seconds: float) -> None:
        try:
            frame = await self.recv(seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame {frame}")

    def close(self) -> None:
        self.conn.close()


async def connect_and_auth(url: str, secret: str,
                           user_id: str) -> tuple[WsClient, dict[str, Any]]:
    """Connect and send auth as ``user_id``; the client and the server's first reply."""
    client = await WsClient.connect(url)
    reply = await client.request({"type": "auth", "token": mint_token(secret, user_id)})
    return client, reply


async def authed(url: str, secret: str, user_id: str) -> WsClient:
    """Connect and authenticate as ``user_id``; asserts auth_success."""
    client, reply = await connect_and_auth(url, secret, user_id)
    assert reply["type"] == "auth_success", reply
    return client
