"""Run a real ``tornchat serve`` subprocess for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping

from tests.support.services import free_port

TEST_SECRET = "test-secret-that-is-long-enough-for-production-use"


class ServerProcess:
    """``tornchat serve`` on a free port; ``stop()`` sends SIGTERM and waits."""

    def __init__(self, env: Mapping[str, str] | None = None, args: tuple[str, ...] = (),
                 cwd: str | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, "PORT": str(self.port), "TORNCHAT_HOST": "127.0.0.1",
                    "ACCESS_TOKEN_SECRET": TEST_SECRET, "LOG_LEVEL": "info", **(env or {})}
        self.args = args
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(cwd or "/tmp", f"tornchat-{self.port}.log")

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/chat"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tornchat.cli", "serve", *self.args],
            env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.logs()}")
            if self.health(timeout=0.5)[0] == 200:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"server did not become healthy:\n{self.logs()}")

    def health(self, timeout: float = 2.0) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.http_url + "/health", timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return 0, {}

    def logs(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
