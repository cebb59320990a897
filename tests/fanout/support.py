"""Helpers for the cluster tests: instances of ``serve --processes N``, their workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from tests.support.server import TEST_SECRET, ServerProcess
from tests.support.services import free_port, port_open, unavailable
from tests.support.wsclient import WsClient
from tornchat.storage.database import open_database
from tornchat.storage.schema import migrate
from tornchat.ws.auth import mint_token

#: fast liveness so the tests see expiry and reconnects in seconds, not minutes
FAST_ENV = {
    "TORNCHAT_HEARTBEAT_INTERVAL": "3",  # connection slots expire after 7.5 s
    "TORNCHAT_REDIS_PROBE_INTERVAL": "1",
    "TORNCHAT_RATE_LIMIT_PER_SECOND": "1000",
    "TORNCHAT_RATE_LIMIT_BURST": "1000",
}


def unique(name: str) -> str:
    """A user id no other test (or earlier run sharing Redis) uses."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def migrated(database_url: str) -> str:
    database = open_database(database_url, 1)
    try:
        migrate(database)
    finally:
        database.close()
    return database_url


def workers_of(server: ServerProcess) -> list[int]:
    """PIDs of the worker processes of a ``serve --processes N`` instance."""
    assert server.proc is not None
    pid = server.proc.pid
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(child) for child in handle.read().split()]
    except FileNotFoundError:
        return []


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def all_workers_healthy(server: ServerProcess, workers: int) -> bool:
    """Every worker forked, has logged ``listening``, and /health answers 200.

    /health is answered by whichever worker wins the accept, so each worker's
    own start-up log line is what proves it is serving.
    """
    pids = workers_of(server)
    if len(pids) != (workers if workers > 1 else 0):  # 1 = no fork
        return False
    logs = server.logs()
    if not all(f'"listening", "process": {pid},' in logs for pid in pids):
        return False
    return all(server.health(timeout=2.0)[0] == 200 for _ in range(3))


def start_instances(env: Mapping[str, str], count: int = 2,
                    processes: int = 2) -> list[ServerProcess]:
    servers: list[ServerProcess] = []
    try:
        for _ in range(count):
            server = ServerProcess(env={**FAST_ENV, **env},
                                   args=("--processes", str(processes))).start()
            servers.append(server)
            wait_until(lambda s=server: all_workers_healthy(s, processes), 20,
                       what=f"{processes} healthy workers on port {server.port}")
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers: list[ServerProcess]) -> None:
    for server in servers:
        status = server.stop()
        assert status in (0, None), f"instance exited {status}:\n{server.logs()[-3000:]}"


def metrics_text(server: ServerProcess) -> str:
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=3) as response:
        return response.read().decode()


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} missing from /metrics")


async def connect(server: ServerProcess, user_id: str) -> tuple[WsClient, dict]:
    """Connect and send auth; returns the client and the server's first reply."""
    client = await WsClient.connect(server.ws_url)
    reply = await client.request({"type": "auth", "token": mint_token(TEST_SECRET, user_id)})
    return client, reply


async def authed(server: ServerProcess, user_id: str) -> WsClient:
    client, reply = await connect(server, user_id)
    assert reply["type"] == "auth_success", reply
    return client


async def frames_of(client: WsClient, kind: str, count: int,
                    timeout: float = 10.0) -> list[dict]:
    """The next ``count`` frames of type ``kind`` (other types are skipped)."""
    found: list[dict] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(found) < count:
        try:
            frame = await client.recv(max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise AssertionError(f"got {len(found)} of {count} {kind} frames; last: "
                                 f"{found[-2:]}") from None
        if frame["type"] == kind:
            found.append(frame)
    return found


@dataclass
class RedisServer:
    """A private ``redis-server`` on a free port that a test may kill and restart."""

    port: int
    workdir: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open("127.0.0.1", self.port, 0.2), 10, what="redis-server")
        return self

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a hung or partitioned Redis)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@contextlib.contextmanager
def private_redis(workdir: str) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    server = RedisServer(free_port(), workdir).start()
    try:
        yield server
    finally:
        server.kill()


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
