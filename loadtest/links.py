"""Client connections of the benchmark: one asyncio class per wire protocol.

A link connects and authenticates one user, joins a group conversation, sends
stamped messages and hands every frame it reads to a :class:`Recorder`. Both
protocols cost the client about the same (one :class:`RawWebSocket` text frame
and one orjson parse per delivery), so the load generator treats tornchat and
the python-socketio peer alike.

Thread rule: one event loop per load-generator process; no locking.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from array import array
from collections.abc import Sequence
from typing import Any

import orjson

from harness.rawws import RawWebSocket
from loadtest.stamp import sent_at


class LinkError(RuntimeError):
    """A connection could not be opened, authenticated or set up."""


class Recorder:
    """Counts and latencies of one measurement window, shared by a process's links.

    Only messages whose *intended* send time lies inside ``window`` count, so
    warm-up traffic and late stragglers of a previous step are ignored.
    """

    def __init__(self) -> None:
        self.window = (0.0, 0.0)
        self.reset()

    def reset(self, window: tuple[float, float] = (0.0, 0.0)) -> None:
        self.window = window
        self.delivered = 0
        self.acked = 0
        self.errors: dict[str, int] = {}
        self.latencies = array("d")
        self.ack_latencies = array("d")

    def on_delivery(self, content: object, now: float) -> None:
        start = sent_at(content)
        if start is not None and self.window[0] <= start < self.window[1]:
            self.delivered += 1
            self.latencies.append((now - start) * 1000.0)

    def on_ack(self, content: object, now: float) -> None:
        start = sent_at(content)
        if start is not None and self.window[0] <= start < self.window[1]:
            self.acked += 1
            self.ack_latencies.append((now - start) * 1000.0)

    def on_error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1


class Link:
    """One authenticated connection; subclasses speak a concrete protocol."""

    def __init__(self, url: str, recorder: Recorder) -> None:
        self.url = url
        self.recorder = recorder
        self.ws: RawWebSocket | None = None
        self._waiters: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)

    async def open(self, user_id: str, token: str) -> None:
        self.ws = await RawWebSocket.connect(self.url)
        await self._authenticate(user_id, token)
        self.ws.on_text = self.on_text
        self.ws.closed.add_done_callback(self._on_closed)

    def _on_closed(self, _: object) -> None:
        if self.ws is not None:
            self.recorder.on_error("connection_lost")

    async def close(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            ws.close()

    async def _expect(self, key: str, timeout: float = 120.0) -> Any:
        future = self._waiters[key] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiters.pop(key, None)

    def _resolve(self, key: str, value: Any) -> None:
        future = self._waiters.get(key)
        if future is not None and not future.done():
            future.set_result(value)

    # -- protocol hooks -------------------------------------------------------

    async def _authenticate(self, user_id: str, token: str) -> None:
        raise NotImplementedError

    async def join(self, key: str, members: Sequence[str]) -> str:
        """Make this user's group conversation exist; returns its id."""
        raise NotImplementedError

    def send(self, conversation_id: str, content: str) -> None:
        raise NotImplementedError

    def on_text(self, text: str) -> None:
        raise NotImplementedError


class TornchatLink(Link):
    """The tornchat protocol (also spoken by the trivial server)."""

    async def _authenticate(self, user_id: str, token: str) -> None:
        assert self.ws is not None
        self.ws.send_text(orjson.dumps({"type": "auth", "token": token}).decode())
        reply = orjson.loads(await self.ws.recv())
        if reply.get("type") != "auth_success":
            raise LinkError(f"auth refused for {user_id}: {reply}")

    async def join(self, key: str, members: Sequence[str]) -> str:
        assert self.ws is not None
        self.ws.send_text(orjson.dumps({
            "type": "send_message", "recipientIds": list(members), "content": "setup",
            "clientMessageId": f"setup-{key}"}).decode())
        return str(await self._expect(f"setup-{key}"))

    def send(self, conversation_id: str, content: str) -> None:
        assert self.ws is not None
        self.ws.send_text(
            f'{{"type":"send_message","conversationId":"{conversation_id}",'
            f'"content":"{content}","clientMessageId":"b{next(self._ids)}"}}')

    def on_text(self, text: str) -> None:
        frame = orjson.loads(text)
        kind = frame.get("type")
        if kind == "new_message":
            self.recorder.on_delivery(frame["data"]["content"], time.time())
        elif kind == "message_sent":
            data = frame["data"]
            client_message_id = frame.get("clientMessageId") or ""
            if client_message_id.startswith("setup-"):
                self._resolve(client_message_id, data["conversationId"])
            else:
                self.recorder.on_ack(data["content"], time.time())
        elif kind == "error":
            self.recorder.on_error(str(frame.get("code")))
            client_message_id = frame.get("clientMessageId") or ""
            if client_message_id.startswith("setup-"):
                self._resolve(client_message_id, None)


class SocketIOLink(Link):
    """Socket.IO v5 over Engine.IO v4, WebSocket transport, spoken directly.

    Packets: ``0{..}`` open, ``40{auth}`` connect, ``2``/``3`` ping/pong,
    ``42[name,data]`` event, ``42<id>[..]`` event wanting an ack, ``43<id>[..]``
    the ack. Speaking it directly (instead of the python-socketio client)
    keeps the client's cost per frame the same as for tornchat.
    """

    async def _authenticate(self, user_id: str, token: str) -> None:
        assert self.ws is not None
        opening = await self.ws.recv()
        if not opening.startswith("0"):
            raise LinkError(f"unexpected Engine.IO open packet {opening!r}")
        self.ws.send_text("40" + orjson.dumps({"token": token}).decode())
        while True:
            reply = await self.ws.recv()
            if reply == "2":
                self.ws.send_text("3")
                continue
            if reply.startswith("40"):
                return
            raise LinkError(f"connect refused for {user_id}: {reply!r}")

    async def join(self, key: str, members: Sequence[str]) -> str:
        assert self.ws is not None
        ack = next(self._ids)
        self.ws.send_text(f'42{ack}["join",{{"room":"{key}"}}]')
        await self._expect(str(ack))
        return key

    def send(self, conversation_id: str, content: str) -> None:
        assert self.ws is not None
        self.ws.send_text(f'42{next(self._ids)}["send_message",'
                               f'{{"conversationId":"{conversation_id}","content":"{content}"}}]')

    def on_text(self, text: str) -> None:
        if text.startswith("42"):
            name, data = orjson.loads(text[2:])
            if name == "new_message":
                self.recorder.on_delivery(data["content"], time.time())
        elif text.startswith("43"):
            bracket = text.index("[")
            payload = orjson.loads(text[bracket:])
            data = payload[0] if payload else None
            if isinstance(data, dict) and "content" in data:
                self.recorder.on_ack(data["content"], time.time())
            else:
                self._resolve(text[2:bracket], data)
        elif text == "2" and self.ws is not None:
            self.ws.send_text("3")


LINKS: dict[str, type[Link]] = {"tornchat": TornchatLink, "trivial": TornchatLink,
                                "socketio": SocketIOLink}
