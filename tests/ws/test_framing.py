"""Client frames as RFC 6455 has them, read by the callback-driven reader
(tornchat.ws.framereader): fragments, control frames, bursts, violations, close."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from typing import Any

import pytest
from tornado.ioloop import IOLoop

from harness.ports import eventually
from harness.wsclient import authed
from tornchat.auth import mint_token

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


class FrameSocket:
    """A raw client: writes exactly the frames a test builds, reads what comes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> FrameSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /api/v1/chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        response = await reader.readuntil(b"\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 101"), response
        return cls(reader, writer)

    @staticmethod
    def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
        first = (0x80 if fin else 0) | rsv | opcode
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", first, 0x80 | size)
        elif size < 65536:
            header = struct.pack("!BBH", first, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, size)
        mask = os.urandom(4)
        return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))

    async def receive(self, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The next server frame, or None once the server has dropped the socket."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            size = head[1] & 0x7F
            if size == 126:
                size = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            return head[0] & 0x0F, await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def receive_json(self) -> dict[str, Any]:
        """The next text frame (the server's heartbeat pings are skipped)."""
        got = await self.receive()
        while got is not None and got[0] == PING:
            got = await self.receive()
        assert got is not None and got[0] == TEXT, got
        return json.loads(got[1])

    async def dropped(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (frames before it are skipped)."""
        while True:
            got = await self.receive(timeout)
            if got is None:
                return True

    def close(self) -> None:
        self.writer.close()


def _auth(secret: str, user: str) -> bytes:
    return json.dumps({"type": "auth", "token": mint_token(secret, user)}).encode()


async def test_a_fragmented_message_is_one_message_and_pings_may_interleave(server):
    client = await FrameSocket.open(server.port)
    auth = _auth(server.secret, "alice")
    client.send(FrameSocket.frame(TEXT, auth[:10], fin=False),
                FrameSocket.frame(PING, b"between"),
                FrameSocket.frame(CONTINUATION, auth[10:30], fin=False),
                FrameSocket.frame(CONTINUATION, auth[30:]))
    assert await client.receive() == (PONG, b"between")
    assert (await client.receive_json())["type"] == "auth_success"
    client.close()


async def test_frames_arriving_together_are_each_answered_in_order(start_server):
    server = await start_server(rate_limit_per_second=10_000.0, rate_limit_burst=10_000,
                                max_frame_bytes=200_000)
    client = await FrameSocket.open(server.port)
    pings = [FrameSocket.frame(TEXT, json.dumps({"type": "ping", "n": n}).encode())
             for n in range(200)]
    client.send(FrameSocket.frame(TEXT, _auth(server.secret, "alice")), *pings)
    assert (await client.receive_json())["type"] == "auth_success"
    for _ in range(200):
        assert await client.receive_json() == {"type": "pong"}
    big = "x" * 70_000  # a 64-bit length header; content over the message limit
    client.send(FrameSocket.frame(TEXT, json.dumps(
        {"type": "send_message", "recipientIds": ["bob"], "content": big}).encode()))
    assert (await client.receive_json())["type"] == "error"
    client.close()


@pytest.mark.parametrize("frames", [
    pytest.param([FrameSocket.frame(TEXT, b"{}", rsv=0x40)], id="reserved-bit"),
    pytest.param([FrameSocket.frame(PING, b"p" * 126)], id="long-control-frame"),
    pytest.param([FrameSocket.frame(PING, b"p", fin=False)], id="fragmented-control-frame"),
    pytest.param([FrameSocket.frame(CONTINUATION, b"x")], id="continuation-of-nothing"),
    pytest.param([FrameSocket.frame(TEXT, b"{", fin=False), FrameSocket.frame(TEXT, b"{}")],
                 id="new-message-inside-a-fragmented-one"),
    pytest.param([FrameSocket.frame(TEXT, b"\xff\xfe")], id="invalid-utf8"),
])
async def test_protocol_violations_drop_only_that_connection(server, frames):
    bystander = await authed(server.url, server.secret, "bob")
    client = await FrameSocket.open(server.port)
    client.send(FrameSocket.frame(TEXT, _auth(server.secret, "alice")))
    assert (await client.receive_json())["type"] == "auth_success"
    client.send(*frames)
    assert await client.dropped()
    await eventually(lambda: not server.app.registry.connections_of("alice"))
    assert await bystander.request({"type": "ping"}) == {"type": "pong"}
    bystander.close()


async def test_a_close_frame_is_echoed_and_the_connection_is_forgotten(server):
    client = await FrameSocket.open(server.port)
    client.send(FrameSocket.frame(TEXT, _auth(server.secret, "alice")))
    assert (await client.receive_json())["type"] == "auth_success"
    assert server.app.registry.connections_of("alice")
    client.send(FrameSocket.frame(CLOSE, struct.pack("!H", 1000) + b"bye"))
    assert await client.receive() == (CLOSE, struct.pack("!H", 1000))
    assert await client.dropped()
    await eventually(lambda: not server.app.registry.connections_of("alice"))


async def test_a_message_over_the_size_limit_in_fragments_closes_with_1009(start_server):
    server = await start_server(max_frame_bytes=4096)
    client = await FrameSocket.open(server.port)
    client.send(FrameSocket.frame(TEXT, b"x" * 3000, fin=False),
                FrameSocket.frame(CONTINUATION, b"x" * 3000))
    closing = await client.receive()
    assert closing is not None and closing[0] == CLOSE
    assert struct.unpack("!H", closing[1][:2])[0] == 1009
    assert await client.dropped()


async def test_an_open_connection_keeps_no_task_running(server):
    before = len(asyncio.all_tasks())
    clients = [await authed(server.url, server.secret, f"idle{n}") for n in range(20)]
    await asyncio.sleep(0.1)
    # the client side holds one reader task per connection; the server none
    assert len(asyncio.all_tasks()) - before <= len(clients)
    for client in clients:
        assert await client.request({"type": "ping"}) == {"type": "pong"}
        client.close()


async def test_a_frame_arriving_in_pieces_is_reassembled(server):
    """Its header a byte at a time (short of the 2 bytes, then of the 16-bit
    length), then the mask and the payload in pieces."""
    client = await FrameSocket.open(server.port)
    client.send(FrameSocket.frame(TEXT, _auth(server.secret, "alice")))
    assert (await client.receive_json())["type"] == "auth_success"
    frame = FrameSocket.frame(TEXT, json.dumps({"type": "ping", "pad": "p" * 300}).encode())
    for piece in (frame[:1], frame[1:2], frame[2:3], frame[3:4], frame[4:6], frame[6:100],
                  frame[100:250], frame[250:]):
        client.send(piece)
        await client.writer.drain()
        await asyncio.sleep(0.005)
    assert await client.receive_json() == {"type": "pong"}
    client.close()


async def test_a_long_burst_of_small_frames_across_reads_is_answered_in_full(start_server):
    """More than one read's worth (64 KiB) of frames in one write: frames
    straddling the read boundary are put together, none is lost or repeated."""
    server = await start_server(rate_limit_per_second=100_000.0, rate_limit_burst=100_000)
    client = await FrameSocket.open(server.port)
    pings = [FrameSocket.frame(TEXT, json.dumps({"type": "ping", "n": n}).encode())
             for n in range(3000)]
    assert sum(map(len, pings)) > 65536
    client.send(FrameSocket.frame(TEXT, _auth(server.secret, "alice")), *pings)
    assert (await client.receive_json())["type"] == "auth_success"
    for _ in range(3000):
        assert await client.receive_json() == {"type": "pong"}
    client.close()


async def test_a_chatty_connection_stays_registered_with_the_event_loop(server):
    """Request after request, the server never re-registers the socket: Tornado
    would otherwise drop and re-add its read interest per message."""
    client = await FrameSocket.open(server.port)
    client.send(FrameSocket.frame(TEXT, _auth(server.secret, "alice")))
    assert (await client.receive_json())["type"] == "auth_success"
    [handler] = server.app.registry.connections_of("alice")
    fd = handler.ws_connection.stream.fileno()
    loop = IOLoop.current()
    changes: list[object] = []
    update_handler = loop.update_handler

    def counting(target: Any, events: int) -> None:
        if target == fd or getattr(target, "fileno", lambda: None)() == fd:
            changes.append(events)
        update_handler(target, events)

    loop.update_handler = counting  # type: ignore[method-assign]
    try:
        for _ in range(30):
            client.send(FrameSocket.frame(TEXT, b'{"type":"ping"}'))
            assert await client.receive_json() == {"type": "pong"}
    finally:
        loop.update_handler = update_handler  # type: ignore[method-assign]
    assert changes == []
    client.close()


async def test_a_send_to_a_known_conversation_starts_no_task(server):
    """The common send (membership cached) completes through callbacks: no
    asyncio task and no coroutine chain per message."""
    client = await FrameSocket.open(server.port)
    client.send(FrameSocket.frame(TEXT, _auth(server.secret, "alice")))
    assert (await client.receive_json())["type"] == "auth_success"
    client.send(FrameSocket.frame(TEXT, json.dumps(
        {"type": "send_message", "recipientIds": ["bob"], "content": "first"}).encode()))
    first = await client.receive_json()
    assert first["type"] == "message_sent"
    conversation_id = first["data"]["conversationId"]

    loop = asyncio.get_running_loop()
    created: list[Any] = []

    def counting_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        code = getattr(coro, "cr_code", None)
        if code is not None and ("tornchat" in code.co_filename
                                 or "tornado" in code.co_filename):
            created.append(code.co_qualname)  # the server's, not this test client's reads
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting_factory)
    try:
        for n in range(10):
            client.send(FrameSocket.frame(TEXT, json.dumps(
                {"type": "send_message", "conversationId": conversation_id,
                 "content": f"m{n}", "clientMessageId": f"c{n}"}).encode()))
            ack = await client.receive_json()
            assert (ack["type"], ack["clientMessageId"], ack["data"]["seq"]) == (
                "message_sent", f"c{n}", n + 2)
    finally:
        loop.set_task_factory(None)
    assert created == []
    client.close()
