"""A real ``tornchat serve`` subprocess on a free port, its URLs, the JSON probe of /health."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from harness.ports import free_port

TEST_SECRET = "test-secret-that-is-long-enough-for-production-use"


def http_json(url: str, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
    """(status, body) of a GET; (0, {}) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (OSError, ValueError):
        return 0, {}


class LocalUrls:
    """The URLs of a tornchat server listening on 127.0.0.1:``port``."""

    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/chat"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class ServerProcess(LocalUrls):
    """``tornchat serve`` on a free port; ``stop()`` sends SIGTERM and waits."""

    def __init__(self, env: Mapping[str, str] | None = None, args: tuple[str, ...] = (),
                 cwd: str | None = None, port: int | None = None,
                 module: tuple[str, ...] = ("tornchat.cli",)) -> None:
        """``module``: what ``python -m`` runs, with its arguments before
        ``serve`` (a wrapper such as :mod:`loadtest.looplag`)."""
        self.port = port or free_port()
        self.env = {**os.environ, "PORT": str(self.port), "TORNCHAT_HOST": "127.0.0.1",
                    "ACCESS_TOKEN_SECRET": TEST_SECRET, "LOG_LEVEL": "info", **(env or {})}
        self.args = args
        self.module = module
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(cwd or "/tmp", f"tornchat-{self.port}.log")

    def start(self, timeout: float = 20.0) -> ServerProcess:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *self.module, "serve", *self.args],
                env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.logs()}")
            if self.health(timeout=0.5)[0] == 200:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"server did not become healthy:\n{self.logs()}")

    def health(self, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
        return http_json(self.http_url + "/health", timeout)

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
