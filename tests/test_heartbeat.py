"""PROTOCOL section 5: heartbeat pings and termination of silent connections."""

from __future__ import annotations

import asyncio

from tests.support.rawws import SilentClient
from tests.support.wsclient import WsClient, authed
from tornchat.auth import mint_token


async def test_a_client_that_stops_answering_pings_is_terminated_and_forgotten(server):
    loop = asyncio.get_running_loop()
    silent = await loop.run_in_executor(None, SilentClient, "127.0.0.1", server.port)
    silent.send_json({"type": "auth", "token": mint_token(server.secret, "ghost")})
    for _ in range(50):
        if server.app.connection_count == 1:
            break
        await asyncio.sleep(0.02)
    assert server.app.connection_count == 1

    # heartbeat is 0.3 s in tests: one ping unanswered, then terminated.
    closed = await loop.run_in_executor(None, silent.wait_closed_by_server, 3.0)
    assert closed
    assert server.app.connection_count == 0
    silent.close()
    # its slot is free again: five new connections of the same user fit
    clients = [await authed(server.url, server.secret, "ghost") for _ in range(5)]
    assert server.app.connection_count == 5
    for client in clients:
        client.close()


async def test_a_client_that_answers_pings_stays_connected(server):
    client = await authed(server.url, server.secret, "alice")  # Tornado's client pongs
    await asyncio.sleep(1.2)  # four heartbeat intervals
    assert await client.request({"type": "ping"}) == {"type": "pong"}
    assert server.app.connection_count == 1


async def test_unauthenticated_connections_are_not_counted(server):
    client = await WsClient.connect(server.url)
    await asyncio.sleep(0.1)
    assert server.app.connection_count == 0
    client.close()
