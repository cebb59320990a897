"""PROTOCOL §14, slow consumers: a connection that stops reading is closed
with 4008 once its unsent bytes would pass TORNCHAT_MAX_OUTBOUND_BYTES; the
others in its group get everything, its slot is free at once, and a client
that reads is never cut off, however long its sync replay."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from tornado.iostream import IOStream

from harness.rawws import server_frames, unread_client
from harness.wsclient import authed
from tornchat.auth import mint_token
from tornchat.errors import SlowConsumer
from tornchat.ws.framewriter import write_frame

LIMIT = 1048576  # the default: 17 messages of 60 KB
CONTENT = "x" * 60000  # large messages: the kernel's socket buffers (up to 4 MB) fill first


@pytest.fixture
def server(io_loop, start_server):
    # no heartbeat during the test: it would drop the silent client for its missing pongs
    return io_loop.run_sync(lambda: start_server(
        max_outbound_bytes=LIMIT, max_message_length=60000, heartbeat_interval=60.0))


async def silent_client(server, user_id: str) -> socket.socket:
    """Authenticated, then never reads again."""
    return await unread_client("127.0.0.1", server.port, mint_token(server.secret, user_id))


async def read_to_end(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while True:
        more = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
        if not more:
            return data
        data += more


def last_close_code(data: bytes) -> int | None:
    """The code of the last close frame in what the server wrote."""
    codes = [struct.unpack_from("!H", payload)[0]
             for opcode, _, payload in server_frames(data)[0] if opcode == 0x8 and payload]
    return codes[-1] if codes else None


async def _wait_for(condition, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_reader_that_stops_is_closed_with_4008_and_the_others_get_everything(server):
    sender = await authed(server.url, server.secret, "alice")
    fast = await authed(server.url, server.secret, "bob")
    slow = await silent_client(server, "carl")
    await asyncio.sleep(0.4)  # past the hold after auth (TORNCHAT_SYNC_HOLD): all live now
    first = await sender.request({"type": "send_message", "recipientIds": ["bob", "carl"],
                                  "content": CONTENT})
    conversation_id = first["data"]["conversationId"]
    count = 160  # 9.6 MB per receiver: more than the kernel's buffers and the bound
    received: list[int] = []

    async def read_fast() -> None:
        while len(received) < count:
            frame = await fast.recv(10)
            if frame["type"] == "new_message":
                received.append(frame["data"]["seq"])

    reading = asyncio.ensure_future(read_fast())
    for _ in range(count - 1):
        ack = await sender.request({"type": "send_message", "conversationId": conversation_id,
                                    "content": CONTENT})
        assert ack["type"] == "message_sent"
    await reading
    assert received == list(range(1, count + 1))

    slots = server.app.slots
    await _wait_for(lambda: _zero(slots.count("carl")))  # closed, its slot free at once
    assert server.app.metrics.slow_consumers._value.get() == 1
    assert last_close_code(await read_to_end(slow)) == 4008
    slow.close()
    again = [await authed(server.url, server.secret, "carl") for _ in range(5)]
    for client in (sender, fast, *again):
        client.close()


async def _zero(count) -> bool:
    return await count == 0


async def test_a_client_that_reads_gets_a_sync_far_larger_than_the_bound(server):
    sender = await authed(server.url, server.secret, "alice")
    first = await sender.request({"type": "send_message", "recipientIds": ["bob"],
                                  "content": CONTENT})
    conversation_id = first["data"]["conversationId"]
    for _ in range(99):  # 100 messages of 60 KB: about 6 times the bound
        await sender.request({"type": "send_message", "conversationId": conversation_id,
                              "content": CONTENT})
    bob = await authed(server.url, server.secret, "bob")
    await bob.send({"type": "sync", "conversations": {conversation_id: 0}})
    seqs = []
    while True:
        frame = await bob.recv(10)
        if frame["type"] == "sync_done":
            break
        assert frame["type"] == "new_message", frame
        seqs.append(frame["data"]["seq"])
    assert seqs == list(range(1, 101))
    assert await bob.request({"type": "ping"}) == {"type": "pong"}
    assert server.app.metrics.slow_consumers._value.get() == 0
    sender.close()
    bob.close()


class _Connection:
    """What write_frame needs of a WebSocket connection: its stream."""

    def __init__(self, stream: IOStream) -> None:
        self.stream = stream

    def is_closing(self) -> bool:
        return False


async def test_answers_cannot_raise_the_bound_again_and_again():
    """An answer (an exempt write) may pass the bound once, but not while
    more than the bound is queued already: a client that stops reading and
    keeps asking cannot grow the queue by a bound per request."""
    server_side, client_side = socket.socketpair()
    client_side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connection = _Connection(IOStream(server_side))
    limit, frame = 65536, b"x" * 8192
    try:
        with pytest.raises(SlowConsumer):
            for _ in range(1000):  # live frames until the bound refuses one
                write_frame(connection, frame, limit)
        write_frame(connection, frame, limit, exempt=True)  # an answer: queued once more
        queued = len(connection.stream._write_buffer)
        with pytest.raises(SlowConsumer):
            for _ in range(100):
                write_frame(connection, frame, limit, exempt=True)
                write_frame(connection, frame, limit)
        assert len(connection.stream._write_buffer) <= 2 * limit + len(frame)
        assert queued <= limit + len(frame)
    finally:
        connection.stream.close()
        client_side.close()
