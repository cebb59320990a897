"""The alternating ladder benchmark: every system gets each rate before any
system gets the next, the order rotates, a failed system climbs no further,
and the summary reads medians and ratios off the steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest import ladder_bench
from loadtest.ladder_bench import (
    cpu_scaling,
    highest_passing,
    per_delivery,
    process_cpu,
    rotated,
    summary,
    table,
)


def _step(system: str, rate: float, p99: float, passed: bool = True,
          cpu: float = 100.0) -> dict:
    return {"system": system, "rate": rate, "p50": p99 / 3, "p99": p99, "loss": 0.0,
            "passed": passed, "server_cpu_us_per_delivery": cpu, "acked_per_s": rate}


def test_the_order_rotates_from_step_to_step() -> None:
    assert rotated([1, 2, 3], 0) == [1, 2, 3]  # type: ignore[list-item]
    assert rotated([1, 2, 3], 1) == [2, 3, 1]  # type: ignore[list-item]
    assert rotated([1, 2, 3], 4) == [2, 3, 1]  # type: ignore[list-item]
    assert rotated([], 3) == []


def test_the_highest_passing_rate_needs_every_round_to_pass() -> None:
    steps = [_step("a", 250, 5), _step("a", 500, 9), _step("a", 500, 60, passed=False),
             _step("a", 250, 6)]
    assert highest_passing(steps) == 250
    assert highest_passing([_step("a", 250, 90, passed=False)]) is None
    # a pass above a failure does not count: a lucky round at 1,000 after one failed at 500
    assert highest_passing([_step("a", 250, 5), _step("a", 500, 70, passed=False),
                            _step("a", 1000, 9)]) == 250


def test_table_summary_and_ratios_from_medians() -> None:
    results = {"config": {"group_size": 10, "p99_limit_ms": 50.0},
               "systems": ["tornchat-1w", "tornchat-2w", "node-seed-2w"],
               "steps": {
                   "tornchat-1w": [_step("tornchat-1w", 500, 4, cpu=50)],
                   "tornchat-2w": [_step("tornchat-2w", 500, 6, cpu=60),
                                   _step("tornchat-2w", 1000, 9, cpu=55)],
                   "node-seed-2w": [_step("node-seed-2w", 500, 5),
                                    _step("node-seed-2w", 1000, 70, passed=False)]}}
    text = table(results)
    assert "| 500 | 1.3 / 4.0 (50) | 2.0 / 6.0 (60) | 1.7 / 5.0 (100) |" in text
    assert "fails (70.0 ms" in text
    lines = summary(results)
    assert "- tornchat-2w / node-seed-2w, highest passing rate: 2.00x" in lines
    assert cpu_scaling(results) == [
        "- server CPU per delivery, tornchat 2 workers / 1 worker: 500: 1.20x (60 / 50 µs)"]


def test_redis_cpu_is_counted_per_delivery_like_the_servers() -> None:
    # 0.7 s of CPU over a 6 s step after 1 s of warm-up: 0.6 s for the 6
    # measured seconds, at 1,000 deliveries a second
    assert per_delivery(0.7, {"delivered_per_s": 1000.0}, 6.0, 1.0) == pytest.approx(100.0)
    assert per_delivery(0.7, {"delivered_per_s": 0.0}, 6.0, 1.0) is None
    assert process_cpu(None) == 0.0


@pytest.mark.postgres
@pytest.mark.slow
def test_a_short_ladder_alternates_real_systems(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert ladder_bench.main([
        "--systems", "tornchat-1w,trivial", "--rates", "40,80", "--seconds", "0.5",
        "--warmup", "0.2", "--groups", "2", "--group-size", "3", "--kafka-broker", "none",
        "--client-processes", "1", "--out", str(tmp_path),
        # what is checked is the alternation: a first step's hiccup on a loaded
        # machine must not end a system's climb (a failing rate ends it)
        "--p99-limit-ms", "10000"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    order = sorted((step["rate"], step["place"], step["system"]) for name in results["systems"]
                   for step in results["steps"][name])
    assert order == [(40, 0, "tornchat-1w"), (40, 1, "trivial"),
                     (80, 0, "trivial"), (80, 1, "tornchat-1w")]
    assert all(step["loss"] == 0 for name in results["systems"]
               for step in results["steps"][name])
    # the tornchat system's Redis is measured; the trivial server uses none
    assert all(step["redis_cpu_us_per_delivery"] is not None
               for step in results["steps"]["tornchat-1w"])
    assert all(step["redis_cpu_us_per_delivery"] == 0.0 for step in results["steps"]["trivial"])
    assert "systems alternating at every step" in capsys.readouterr().out
