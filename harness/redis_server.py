"""A private ``redis-server`` on a free port, for whoever must kill, pause or
restart Redis, or keep its traffic away from the shared instance."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from harness.ports import free_port, port_open, wait_until
from harness.services import unavailable


@dataclass
class RedisServer:
    """``redis-server`` without persistence on ``port``; it logs into ``workdir``."""

    port: int
    workdir: str
    options: tuple[str, ...] = ()  # more ``redis-server`` arguments
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The running server's process id (None before :meth:`start`)."""
        return self.proc.pid if self.proc is not None else None

    def start(self) -> RedisServer:
        """Start (or restart, on the same port) and wait until it listens."""
        with open(os.path.join(self.workdir, f"redis-{self.port}.log"), "ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.workdir, *self.options],
                stdout=log, stderr=subprocess.STDOUT)
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

    stop = kill


def command_calls(port: int) -> dict[str, int]:
    """Calls per command of the Redis on ``port`` since its last CONFIG RESETSTAT
    (``INFO commandstats``: commands a Lua script calls included)."""
    info = subprocess.run(["redis-cli", "-p", str(port), "info", "commandstats"],
                          capture_output=True, text=True, timeout=10).stdout
    calls = {}
    for line in info.splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            calls[name.removeprefix("cmdstat_")] = int(rest.split("calls=")[1].split(",")[0])
    return calls


def redis_server_installed() -> bool:
    return shutil.which("redis-server") is not None


@contextlib.contextmanager
def private_redis(workdir: str) -> Iterator[RedisServer]:
    """A running private Redis for one test; fails/skips it without ``redis-server``."""
    if not redis_server_installed():
        unavailable("redis-server is not installed")
    server = RedisServer(free_port(), workdir).start()
    try:
        yield server
    finally:
        server.kill()
