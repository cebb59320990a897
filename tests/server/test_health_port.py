"""The health port (TORNCHAT_HEALTH_PORT): probes and metrics on a listener of
their own, which a flood of connections on the main port cannot hold up.

Without it, a worker at TORNCHAT_MAX_PENDING_CONNECTIONS stops accepting on
its one port, so a probe waits in the kernel's queue behind the flood, up to
an auth timeout, and a liveness probe with a shorter timeout restarts a
worker that is fine.
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.simple_httpclient import HTTPTimeoutError

from harness.cluster import all_workers_healthy
from harness.ports import free_port, wait_until
from harness.rawws import upgrade_request
from harness.server import ServerProcess, http_json
from harness.services import require_redis
from harness.wsclient import WsClient
from tests.server.test_lifecycle import clean_env, run_cli
from tornchat.config import load_settings
from tornchat.errors import StartupError
from tornchat.server.lifecycle import listen

PENDING_CAP = 2


async def _get(port: int, path: str, timeout: float = 5.0) -> int:
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}{path}", raise_error=False,
                                             request_timeout=timeout)
    return response.code


async def test_it_serves_the_probes_and_the_metrics_and_nothing_else(io_loop, start_server):
    server = await start_server(health_port=True)
    for path in ("/health", "/health/live", "/metrics"):
        assert await _get(server.health_port, path) == 200, path
        assert await _get(server.port, path) == 200, path  # the main port keeps them
    for path in ("/api/v1/chat", "/api/v1/conversations", "/api/v1/openapi.json", "/demo"):
        assert await _get(server.health_port, path) == 404, path


async def test_it_answers_while_the_main_port_holds_a_flood_back(io_loop, start_server):
    server = await start_server(health_port=True, auth_timeout=10.0,
                                max_pending_connections=PENDING_CAP)
    waiting = [await WsClient.connect(server.url) for _ in range(PENDING_CAP)]
    assert server.app.sessions.pending_watch.paused  # the main port is not being accepted from

    held_back = asyncio.ensure_future(_get(server.port, "/health/live", timeout=1.0))
    assert await _get(server.health_port, "/health/live", timeout=1.0) == 200
    assert await _get(server.health_port, "/health", timeout=1.0) == 200
    with pytest.raises(HTTPTimeoutError):  # it waited in the kernel's queue
        await held_back
    for client in waiting:
        client.close()


async def test_while_draining_it_says_so_and_then_closes(io_loop, start_server):
    server = await start_server(health_port=True)
    # a client that never answers the server's close keeps the drain going
    # (until its deadline) long enough to ask
    loop = asyncio.get_running_loop()
    silent = socket.create_connection(("127.0.0.1", server.port))
    silent.setblocking(False)
    await loop.sock_sendall(silent, upgrade_request("127.0.0.1", server.port, "/api/v1/chat"))
    assert (await loop.sock_recv(silent, 4096)).startswith(b"HTTP/1.1 101 ")
    drained = asyncio.ensure_future(server.app.drain(3.0))
    await asyncio.sleep(0.2)
    assert not drained.done()
    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{server.health_port}/health", raise_error=False)
    assert (response.code, json.loads(response.body)["status"]) == (503, "draining")
    assert await _get(server.health_port, "/health/live") == 200  # a drain is no reason to kill
    with pytest.raises(ConnectionRefusedError):  # no new chat connections meanwhile
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    await drained
    silent.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.health_port), timeout=1).close()


def test_a_health_port_in_use_is_one_readable_error_that_frees_the_main_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        health_port = taken.getsockname()[1]
        settings = load_settings(environ={"PORT": str(free_port()), "TORNCHAT_HOST": "127.0.0.1",
                                          "TORNCHAT_HEALTH_PORT": str(health_port)})
        with pytest.raises(StartupError, match=rf"127.0.0.1:{health_port} "
                                               r"\(TORNCHAT_HOST, TORNCHAT_HEALTH_PORT\)"):
            listen(settings)
    with socket.socket() as again:  # the main port was bound first, and closed again
        again.bind(("127.0.0.1", settings.port))


@pytest.mark.redis
def test_every_worker_of_a_supervisor_serves_it(tmp_path):
    health_port = free_port()
    server = ServerProcess(env={"REDIS_URL": require_redis(),
                                "DATABASE_URL": f"sqlite:///{tmp_path}/chat.db",
                                "TORNCHAT_HEALTH_PORT": str(health_port)},
                           args=("--processes", "2"), cwd=str(tmp_path)).start()
    try:
        wait_until(lambda: all_workers_healthy(server, 2), 20, what="2 healthy workers")
        url = f"http://127.0.0.1:{health_port}/health"
        assert all(http_json(url)[0] == 200 for _ in range(6))
        assert server.logs().count(f'"healthPort": {health_port}') == 2  # both workers listen
        result = run_cli("healthcheck", cwd=str(tmp_path), env=clean_env(
            PORT=str(free_port()),  # nothing there: the health port is what it asks
            TORNCHAT_HEALTH_PORT=str(health_port), TORNCHAT_HOST="127.0.0.1"))
        assert result.returncode == 0, result.stderr
        assert '"status": "ok"' in result.stdout
    finally:
        assert server.stop() == 0
