"""An open, idle connection keeps none of the upgrade's leftovers (tornchat.ws.leanconn)."""

from __future__ import annotations

import asyncio
import collections
import gc
import multiprocessing
import socket
from typing import Any

import pytest
from tornado.httputil import HTTPHeaders
from tornado.iostream import IOStream

from harness.rawws import RawWebSocket
from harness.wsclient import authed
from tornchat.ws.leanconn import LazyDeque, forget_request_headers, lighten_stream


def test_lazy_deque_behaves_like_the_deque_iostream_uses() -> None:
    lazy: LazyDeque[int] = LazyDeque()
    assert not lazy and len(lazy) == 0 and list(lazy) == []
    with pytest.raises(IndexError):
        lazy[0]
    with pytest.raises(IndexError):
        lazy.popleft()
    for item in (1, 2, 3):
        lazy.append(item)
    assert lazy and len(lazy) == 3 and lazy[0] == 1 and lazy[-1] == 3
    assert list(lazy) == [1, 2, 3]
    assert lazy.popleft() == 1 and list(lazy) == [2, 3]
    lazy.clear()
    assert not lazy and list(lazy) == []


def test_lazy_deque_keeps_no_storage_while_empty() -> None:
    lazy: LazyDeque[str] = LazyDeque(collections.deque(["queued"]))
    assert list(lazy) == ["queued"]  # adopting a deque keeps what it holds
    assert lazy.popleft() == "queued"
    assert lazy._items is None  # the 64-slot block is gone again


def test_forgetting_headers_empties_the_object_every_holder_shares() -> None:
    headers = HTTPHeaders({"Upgrade": "websocket", "Sec-WebSocket-Key": "abc"})
    held_elsewhere = headers
    forget_request_headers(headers)
    assert dict(held_elsewhere) == {} and held_elsewhere.get("Upgrade") is None


def test_only_a_plain_iostream_is_lightened() -> None:
    class Unusual:
        _write_futures: list[Any] = []
    assert lighten_stream(Unusual()) is False
    assert lighten_stream(None) is False


async def test_a_lightened_stream_queues_every_write_in_order() -> None:
    """Small writes (merged into bytearrays) and large ones (memoryviews) that the
    kernel does not take at once stay queued, in order, until the reader reads."""
    left, right = socket.socketpair()
    writer, reader = IOStream(left), IOStream(right)
    assert lighten_stream(writer)
    chunks = [bytes([i % 251]) * (100 if i % 3 else 5000) for i in range(1500)]
    writes = [writer.write(chunk) for chunk in chunks]
    assert writer.writing()  # more than the socket buffers hold is queued
    expected = b"".join(chunks)
    received = await reader.read_bytes(len(expected))
    for write in writes:
        await write
    assert received == expected
    assert not writer.writing() and not writer._write_futures
    writer.close()
    reader.close()


async def test_an_idle_authenticated_connection_drops_the_upgrade_leftovers(
        server: Any) -> None:
    client = await authed(server.url, server.secret, "alice")
    (handler,) = server.app.registry.connections_of("alice")
    stream = handler.ws_connection.stream
    assert isinstance(stream._write_futures, LazyDeque)
    assert isinstance(stream._write_buffer._buffers, LazyDeque)
    assert dict(handler.request.headers) == {}
    assert handler.request.connection is None and handler.request.server_connection is None
    assert handler.ui is None
    assert "write" not in vars(handler)  # the attribute dict stays small
    assert await client.request({"type": "ping"}) == {"type": "pong"}
    client.close()


def _hold_unauthenticated(url: str, count: int, go: Any, ready: Any, done: Any) -> None:
    """A child process: on ``go``, ``count`` upgraded connections that never send auth."""
    async def hold() -> None:
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        held = [await RawWebSocket.connect(url) for _ in range(count)]
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, done.wait)
        for client in held:
            client.close()
    asyncio.run(hold())


async def test_a_connection_waiting_to_authenticate_costs_the_collector_few_objects(
        start_server: Any) -> None:
    """Each one is walked by every full collection; 56 objects each before the
    HTTP connection objects, the per-connection auth timer and the read
    closures went (docs/performance.md, "Connection floods"). The clients run
    in another process, so only the server's objects are counted."""
    count = 100
    server = await start_server(auth_timeout=60.0)
    context = multiprocessing.get_context("spawn")  # the test process has threads
    go, ready, done = context.Event(), context.Event(), context.Event()
    child = context.Process(target=_hold_unauthenticated,
                            args=(server.url, count, go, ready, done))
    child.start()
    try:
        gc.collect()
        before = len(gc.get_objects())
        go.set()
        for _ in range(600):
            if ready.is_set() and server.app.sessions.pending >= count:
                break
            await asyncio.sleep(0.05)
        assert server.app.sessions.pending >= count, "the connections did not all open"
        gc.collect()
        per_connection = (len(gc.get_objects()) - before) / count
    finally:
        done.set()
        await asyncio.get_running_loop().run_in_executor(None, child.join, 10)
        if child.is_alive():
            child.kill()
            child.join()
    assert child.exitcode == 0, f"the client process failed (exit code {child.exitcode})"
    assert per_connection <= 30, per_connection
