"""The benchmark's command line and its pure parts (no servers started)."""

from __future__ import annotations

import subprocess
import sys
from array import array
from pathlib import Path

import pytest

from loadtest import report
from loadtest.loadgen import StepResult
from loadtest.stamp import latency_ms, sent_at, stamp
from loadtest.summary import passes, ratios, summarize


def test_help_works() -> None:
    result = subprocess.run([sys.executable, "-m", "loadtest.bench", "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout and "--out" in result.stdout


def test_stamp_round_trips() -> None:
    content = stamp(1700000000.123456)
    assert sent_at(content) == 1700000000.123456
    assert latency_ms(content, now=1700000000.133456) == pytest.approx(10.0, abs=1e-3)
    assert sent_at("hello") is None and sent_at(None) is None and sent_at("t=x;") is None


def _step(rate: float, latencies: list[float], delivered: int, expected: int) -> StepResult:
    return StepResult(rate=rate, duration=2.0, sent=int(rate * 2), expected=expected,
                      delivered=delivered, acked=int(rate * 2), errors={}, lag_ms=1.0,
                      cpu_seconds=0.5, latencies=array("d", latencies),
                      ack_latencies=array("d", latencies))


def test_summary_and_pass_rule() -> None:
    good = summarize(_step(100, [1.0] * 99 + [20.0], 2000, 2000), server_cpu=1.0)
    assert good["delivered_per_s"] == 1000 and good["server_cpu_cores"] == 0.5
    assert passes(good, limit_ms=50)
    lossy = summarize(_step(100, [1.0] * 100, 1900, 2000))
    assert not passes(lossy, limit_ms=50)
    slow = summarize(_step(100, [80.0] * 100, 2000, 2000))
    assert not passes(slow, limit_ms=50)


def _system(best: float, p99: float, workers: int = 1) -> dict[str, object]:
    step = {"delivered_per_s": best, "acked_per_s": best / 10, "p99": p99, "p50": p99 / 2,
            "rate": best / 10}
    return {"available": True, "workers": workers,
            "idle": {"attempted": 10, "connected": 10, "rss_per_conn_kb": 9.0},
            "fixed": {"median": {"p50": 1.0, "p99": p99, "p999": p99 * 2},
                      "runs": [{"loss": 0.0}]},
            "sweep": {"steps": [step], "best": step}}


def test_ratios_and_markdown(tmp_path: Path) -> None:
    systems = {"trivial": _system(100_000, 5.0), "tornchat-1w": _system(20_000, 8.0),
               "tornchat-2w": _system(30_000, 9.0, workers=2),
               "socketio-2p": _system(10_000, 30.0, workers=2)}
    found = ratios(systems)
    assert found["scaling"] == 1.5 and found["peer"] == 3.0
    results = {"machine": {"cores": 2, "cpu": "x", "python": "3.11", "platform": "Linux",
                           "tornchat_commit": "abc"},
               "config": {"quick": True, "client_processes": 2, "groups": 4, "group_size": 11,
                          "fixed_rate": 1000.0, "repeats": 1, "p99_limit_ms": 50.0},
               "systems": systems, "ratios": found, "finished_at": "now"}
    table = report.render_markdown(results)
    assert "| tornchat-1w | tornchat-2w | socketio-2p |" in table
    assert "1.50x" in table and "3.00x" in table and "Load generator ceiling" in table
    report.plot(results, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000
