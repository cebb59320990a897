"""The JavaScript client (clients/js) passes its own suite: Node's test runner
against real ``tornchat serve`` processes started with this interpreter
(sending, typing, read state, presence, a network blip, a long absence, a
server restart, the close codes that stop it, token refresh).

Its dependencies (only ``ws``, standing in for the browser's WebSocket) are
installed with ``npm ci`` from the lock file when missing. Without Node.js the
test skips, and fails in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness.npm import npm_ci
from harness.services import unavailable

CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "js"


def test_the_javascript_client_suite_passes_against_a_real_server() -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("Node.js and npm (for clients/js)")
    assert node is not None and npm is not None
    npm_ci(CLIENT_DIR, npm)
    done = subprocess.run(
        [node, "--test", "--test-concurrency=2", "--test-reporter=spec", "test/"],
        cwd=CLIENT_DIR, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TORNCHAT_PYTHON": sys.executable})
    assert done.returncode == 0, f"node --test failed:\n{done.stdout[-20000:]}\n{done.stderr}"
    assert "fail 0" in done.stdout, done.stdout[-3000:]
