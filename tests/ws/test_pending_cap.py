"""Connection floods: at most TORNCHAT_MAX_PENDING_CONNECTIONS sockets per
worker may wait to authenticate. At the cap the worker stops accepting (new
connections wait in the kernel's queue); one that was accepted anyway gets
503 before the upgrade; authenticated users are not touched; the worker
accepts again once the waiting ones authenticate or time out. While a crowd
waits, it holds few connections in their HTTP phase at a time, and takes new
ones slowly, except as fast as earlier ones authenticate (a reconnect storm
is not a flood)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from harness.rawws import upgrade_request
from harness.wsclient import WsClient, authed
from tornchat.auth import mint_token
from tornchat.server import acceptgate
from tornchat.server.acceptgate import HANDSHAKE_WINDOW, HANDSHAKES_WHILE_CROWDED

CAP = 3


@pytest.fixture
def server(io_loop, start_server):
    # the waiting sockets must outlast the test's pauses: no auth timeout meanwhile
    return io_loop.run_sync(lambda: start_server(max_pending_connections=CAP, auth_timeout=10.0))


async def _upgrade(server) -> tuple[socket.socket, asyncio.Future[bytes]]:
    """Send an upgrade request; the future is the server's answer (headers),
    plus everything up to EOF after a 503."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    await loop.sock_sendall(sock, upgrade_request("127.0.0.1", server.port, "/api/v1/chat"))

    async def answer() -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await loop.sock_recv(sock, 4096)
        if b" 503 " in data.split(b"\r\n", 1)[0]:
            while more := await loop.sock_recv(sock, 4096):
                data += more
        return data

    return sock, asyncio.ensure_future(answer())


async def test_at_the_cap_the_worker_stops_accepting_until_there_is_room(server):
    chatting = await authed(server.url, server.secret, "alice")
    waiting = [await WsClient.connect(server.url) for _ in range(CAP)]
    gate = server.app.sessions.pending_watch
    assert gate.paused
    assert server.app.metrics.accept_pauses._value.get() == 1

    sock, answer = await _upgrade(server)
    await asyncio.sleep(0.3)
    assert not answer.done()  # queued by the kernel, not taken
    assert await chatting.request({"type": "ping"}) == {"type": "pong"}

    for index, client in enumerate(waiting[:2]):  # below nine tenths of the cap
        reply = await client.request({"type": "auth",
                                      "token": mint_token(server.secret, f"user-{index}")})
        assert reply["type"] == "auth_success"
    assert (await asyncio.wait_for(answer, 5)).startswith(b"HTTP/1.1 101 ")
    assert not gate.paused
    sock.close()


async def test_one_accepted_past_the_cap_gets_503_and_is_closed(server):
    server.app.sessions.pending_watch = None  # no gate: as if accepted in the same turn
    waiting = [await WsClient.connect(server.url) for _ in range(CAP)]
    sock, answer = await _upgrade(server)
    refused = await asyncio.wait_for(answer, 5)  # complete: the server closed after it
    assert refused.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in refused
    assert server.app.metrics.refused_pending._value.get() == 1
    sock.close()
    for client in waiting:
        client.close()


async def test_the_waiting_ones_time_out_and_free_their_places(io_loop, start_server):
    server = await start_server(max_pending_connections=2, auth_timeout=0.3)
    waiting = [await WsClient.connect(server.url) for _ in range(2)]
    assert server.app.sessions.pending_watch.paused
    for client in waiting:
        assert await client.wait_closed() == 4001
    client = await authed(server.url, server.secret, "carol")
    assert await client.request({"type": "ping"}) == {"type": "pong"}


async def test_while_crowded_a_worker_holds_few_connections_in_their_http_phase(io_loop,
                                                                                start_server):
    """A flood's requests arrive in bursts; a worker that holds at most
    HANDSHAKES_WHILE_CROWDED half-open upgrades cannot be handed a cascade
    of them in one turn. Sockets that never send a request stop counting
    after HANDSHAKE_WINDOW, so they cannot keep the gate shut."""
    server = await start_server(max_pending_connections=8, auth_timeout=10.0)
    waiting = [await WsClient.connect(server.url) for _ in range(3)]  # over a quarter: crowded
    gate = server.app.sessions.pending_watch
    loop = asyncio.get_running_loop()
    silent = []
    for _ in range(HANDSHAKES_WHILE_CROWDED):
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        silent.append(sock)
    deadline = loop.time() + 5
    while gate.handshaking() < HANDSHAKES_WHILE_CROWDED and loop.time() < deadline:
        await asyncio.sleep(0.02)
    assert gate.handshaking() == HANDSHAKES_WHILE_CROWDED

    sock, answer = await _upgrade(server)
    await asyncio.sleep(HANDSHAKE_WINDOW / 3)
    assert not answer.done()  # waits in the kernel's queue
    assert (await asyncio.wait_for(answer, 5)).startswith(b"HTTP/1.1 101 ")
    for each in [sock, *silent]:
        each.close()
    for client in waiting:
        client.close()


async def _upgrade_until_held_back(server) -> list[tuple[socket.socket, asyncio.Future[bytes]]]:
    """Upgrades one at a time until the gate stops reading its listening
    socket (paused at the cap, or resting with its crowded budget spent):
    the last one waits in the kernel's queue."""
    gate = server.app.sessions.pending_watch
    held = []
    while not (gate.paused or gate.resting) and len(held) < acceptgate.ACCEPTS_PER_TURN + 2:
        held.append(await _upgrade(server))
        await asyncio.sleep(0.2)
    return held


async def test_while_crowded_each_authentication_lets_the_next_connection_in(
        io_loop, start_server, monkeypatch):
    """Crowded, a worker takes new connections at the crowded rate (here one
    in ten seconds), but one that authenticates makes room at once: a flood
    stays slow, a reconnect storm of real clients does not."""
    monkeypatch.setattr(acceptgate, "CROWDED_ACCEPTS_PER_SECOND", 0.1)
    server = await start_server(max_pending_connections=40, auth_timeout=10.0)
    crowd = [await WsClient.connect(server.url) for _ in range(11)]  # over a quarter of 40
    gate = server.app.sessions.pending_watch
    answered = []
    for _ in range(acceptgate.ACCEPTS_PER_TURN + 2):  # the budget lets ACCEPTS_PER_TURN in
        sock, answer = await _upgrade(server)
        try:
            await asyncio.wait_for(asyncio.shield(answer), 0.5)
        except TimeoutError:
            break
        answered.append(sock)
    assert gate.resting, "the crowded rate never held a connection back"
    assert not answer.done()

    reply = await crowd[0].request({"type": "auth", "token": mint_token(server.secret, "u-1")})
    assert reply["type"] == "auth_success"
    assert (await asyncio.wait_for(answer, 2)).startswith(b"HTTP/1.1 101 ")
    for each in [sock, *answered]:
        each.close()
    for client in crowd:
        client.close()


async def test_a_failed_authentication_makes_no_room(io_loop, start_server, monkeypatch):
    monkeypatch.setattr(acceptgate, "CROWDED_ACCEPTS_PER_SECOND", 0.1)
    server = await start_server(max_pending_connections=40, auth_timeout=10.0)
    crowd = [await WsClient.connect(server.url) for _ in range(11)]
    gate = server.app.sessions.pending_watch
    held = await _upgrade_until_held_back(server)
    assert gate.resting
    answer = held[-1][1]

    reply = await crowd[0].request({"type": "auth", "token": "not a token"})
    assert reply["type"] == "auth_error"
    await asyncio.sleep(0.5)
    assert not answer.done() and gate.resting
    for each, _ in held:
        each.close()
    for client in crowd:
        client.close()


@pytest.mark.parametrize("state", ["paused at the cap", "resting while crowded"])
async def test_a_worker_that_is_not_reading_its_socket_still_stops(io_loop, start_server,
                                                                   monkeypatch, state):
    """SIGTERM drains: the listening socket must close whether or not the gate
    has it on the loop at that moment."""
    monkeypatch.setattr(acceptgate, "CROWDED_ACCEPTS_PER_SECOND", 0.1)
    cap = 2 if state == "paused at the cap" else 40
    server = await start_server(max_pending_connections=cap, auth_timeout=10.0)
    gate = server.app.sessions.pending_watch
    clients = [await WsClient.connect(server.url) for _ in range(min(cap, 11))]
    held = await _upgrade_until_held_back(server)
    assert gate.paused if state == "paused at the cap" else gate.resting

    await server.app.drain(2.0)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    for each, _ in held:
        each.close()
    for client in clients:
        client.close()
