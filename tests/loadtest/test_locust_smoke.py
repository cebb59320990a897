"""A 20-second headless Locust run of every scenario against a real server."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from harness.server import TEST_SECRET, ServerProcess

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtest" / "locustfile.py"


@pytest.mark.slow
def test_locust_headless_smoke(tmp_path: Path) -> None:
    server = ServerProcess(env={
        "DATABASE_URL": f"sqlite:///{tmp_path / 'smoke.db'}", "LOG_LEVEL": "warning",
        "TORNCHAT_RATE_LIMIT_PER_SECOND": "1000", "TORNCHAT_RATE_LIMIT_BURST": "1000",
    }, cwd=str(tmp_path)).start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
             "-u", "24", "-r", "12", "-t", "20s", "--host", f"ws://127.0.0.1:{server.port}",
             "--csv", str(tmp_path / "smoke"), "--only-summary", "--stop-timeout", "5"],
            env={**server.env, "ACCESS_TOKEN_SECRET": TEST_SECRET,
                 "TORNCHAT_LOADTEST_RATE": "2", "TORNCHAT_LOADTEST_GROUP_SIZE": "4"},
            capture_output=True, text=True, timeout=90, check=False, cwd=tmp_path)
    finally:
        server.stop()
    with open(tmp_path / "smoke_stats.csv", newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    report = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, report
    for name in ("connect+auth", "send_message", "deliver"):
        assert int(rows[name]["Request Count"]) > 0, report
        assert int(rows[name]["Failure Count"]) == 0, report
    assert float(rows["deliver"]["50%"]) < 5000, report
