"""PROTOCOL section 5: heartbeat pings and termination of silent connections."""

from __future__ import annotations

import asyncio
import json

from harness.rawws import SilentClient
from harness.wsclient import WsClient, authed
from tornchat.auth import mint_token

FAST = 0.3  # seconds between beats in these tests


async def test_a_client_that_stops_answering_pings_is_terminated_and_forgotten(start_server):
    server = await start_server(heartbeat_interval=FAST)
    loop = asyncio.get_running_loop()
    silent = await loop.run_in_executor(None, SilentClient, "127.0.0.1", server.port)
    silent.send_json({"type": "auth", "token": mint_token(server.secret, "ghost")})
    for _ in range(50):
        if server.app.connection_count == 1:
            break
        await asyncio.sleep(0.02)
    assert server.app.connection_count == 1

    # one ping unanswered, then terminated at the next beat
    closed = await loop.run_in_executor(None, silent.wait_closed_by_server, 3.0)
    assert closed
    assert server.app.connection_count == 0
    silent.close()
    # its slot is free again: five new connections of the same user fit
    clients = [await authed(server.url, server.secret, "ghost") for _ in range(5)]
    assert server.app.connection_count == 5
    for client in clients:
        client.close()


async def test_a_client_that_answers_pings_stays_connected(start_server):
    server = await start_server(heartbeat_interval=FAST)
    client = await authed(server.url, server.secret, "alice")  # Tornado's client pongs
    await asyncio.sleep(4 * FAST)
    assert await client.request({"type": "ping"}) == {"type": "pong"}
    assert server.app.connection_count == 1


async def test_unauthenticated_connections_are_not_counted(server):
    client = await WsClient.connect(server.url)
    await asyncio.sleep(0.1)
    assert server.app.connection_count == 0
    client.close()


async def test_a_beat_over_many_connections_lets_other_work_run_between_slices(start_server):
    """Every connection gets a ping, but the loop is never held for the whole
    pass: with thousands of connections that would stall every message."""
    server = await start_server(heartbeat_interval=3600.0)
    sockets = []
    for n in range(600):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(_upgrade_request(server.port))
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_masked_text({"type": "auth", "token": mint_token(server.secret, f"u{n}")}))
        sockets.append((reader, writer))
    for reader, _ in sockets:
        opcode, payload = await _read_frame(reader)
        assert (opcode, json.loads(payload)["type"]) == (0x1, "auth_success")

    turns = 0
    beating = True

    async def other_work() -> None:
        nonlocal turns
        while beating:
            turns += 1
            await asyncio.sleep(0)

    worker = asyncio.ensure_future(other_work())
    await server.app.heartbeat.beat()
    beating = False
    await worker
    assert turns >= 2  # 600 connections: three slices, the loop ran in between
    for reader, writer in sockets:
        assert await _read_frame(reader) == (0x9, b"")  # the ping
        writer.close()


def _upgrade_request(port: int) -> bytes:
    return (f"GET /api/v1/chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def _masked_text(frame: dict) -> bytes:
    """A client text frame with the all-zero mask (which leaves the payload as is)."""
    payload = json.dumps(frame).encode()
    length = (bytes((0x80 | 126,)) + len(payload).to_bytes(2, "big") if len(payload) >= 126
              else bytes((0x80 | len(payload),)))
    return b"\x81" + length + b"\0\0\0\0" + payload


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readexactly(2), 5)
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    return head[0] & 0x0F, await reader.readexactly(size)
