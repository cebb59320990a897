"""A benchmark step's numbers: one step as JSON, whether it passes, the ratios
between systems. Pure functions, no servers (the unit tests use them)."""

from __future__ import annotations

from typing import Any

import numpy as np

from loadtest import report
from loadtest.loadgen import StepResult

LOSS_LIMIT = 0.01  # a step that loses this share of its deliveries fails


def summarize(step: StepResult, server_cpu: float | None = None) -> dict[str, Any]:
    """One step as JSON: rates, latency percentiles, loss, errors, CPU."""
    latency = report.percentiles(np.frombuffer(step.latencies))
    acks = report.percentiles(np.frombuffer(step.ack_latencies))
    return {
        "rate": step.rate, "sent_per_s": step.sent / step.duration,
        "delivered_per_s": step.delivered_per_second,
        "acked_per_s": step.acked / step.duration, "loss": step.loss,
        "errors": step.errors, "lag_ms": step.lag_ms, **latency,
        "ack_p50": acks["p50"], "ack_p99": acks["p99"],
        "generator_cpu_us_per_delivery": (step.cpu_seconds / step.delivered * 1e6
                                          if step.delivered else None),
        "server_cpu_cores": (server_cpu / step.duration) if server_cpu is not None else None,
        # CPU the server spent per delivered message: robust to a busy shared machine
        "server_cpu_us_per_delivery": (server_cpu / step.delivered * 1e6
                                       if server_cpu is not None and step.delivered else None),
    }


def machine_busy(before: Any, after: Any) -> float:
    """Share of all cores busy between two ``psutil.cpu_times()`` (everyone's
    processes: on a shared machine this says how much was left for us)."""
    idle = (after.idle + getattr(after, "iowait", 0.0)) - (before.idle
                                                            + getattr(before, "iowait", 0.0))
    total = sum(after) - sum(before)
    return 1.0 - idle / total if total > 0 else 0.0


def passes(step: dict[str, Any], limit_ms: float) -> bool:
    return (step["p99"] is not None and step["p99"] <= limit_ms and step["loss"] < LOSS_LIMIT
            and not {code for code in step["errors"] if code != "connection_lost"})


def _best(system: dict[str, Any] | None) -> float | None:
    if not system or not system.get("available"):
        return None
    best = system["sweep"]["best"]
    return best["delivered_per_s"] if best else None


def ratios(systems: dict[str, Any]) -> dict[str, Any]:
    def divide(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    one, two = systems.get("tornchat-1w"), systems.get("tornchat-2w")
    peer = systems.get("socketio-2p")
    tornchat_best = two if _best(two) else one

    def fixed_p99(system: dict[str, Any] | None) -> float | None:
        """None where the rate was too much: the p99 of the few messages that
        arrived would flatter a system that lost the rest."""
        if not system or not system.get("available"):
            return None
        if (fixed_loss(system) or 0.0) >= LOSS_LIMIT:
            return None
        return system["fixed"]["median"]["p99"]

    def fixed_loss(system: dict[str, Any] | None) -> float | None:
        if not system or not system.get("available"):
            return None
        losses = sorted(run["loss"] for run in system["fixed"]["runs"])
        return losses[len(losses) // 2] if losses else None

    seed = systems.get("node-seed-2w")
    return {"scaling": divide(_best(two), _best(one)),
            "peer": divide(_best(tornchat_best), _best(peer)),
            "seed": divide(_best(two), _best(seed)),
            "seed_fixed_p99": divide(fixed_p99(two), fixed_p99(seed)),
            "peer_fixed_p99": divide(fixed_p99(tornchat_best), fixed_p99(peer)),
            "peer_fixed_loss": fixed_loss(peer),
            "peer_compared_with": "tornchat-2w" if tornchat_best is two else "tornchat-1w"}


def num(value: float | None, digits: int = 1) -> str:
    """A number for a log line; "-" for none."""
    return "-" if value is None else f"{value:.{digits}f}"
