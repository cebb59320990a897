"""The reconnect-storm benchmark runs end to end (a small storm)."""

from __future__ import annotations

import subprocess
import sys


def test_storm_bench_brings_every_client_back_and_says_how_fast():
    """200 clients in 0.1 s: a crowd (more than 64 accepted within 0.25 s)."""
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.storm_bench", "--clients", "200", "--rounds", "1",
         "--spread", "0.1"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = dict(pair.split("=") for pair in result.stdout.split())
    assert float(figures["failed"]) == 0, result.stdout
    assert float(figures["all_back_s"]) > 0, result.stdout
    assert {"p50_s", "p99_s", "max_s", "refused_503", "accept_pauses"} <= figures.keys()
