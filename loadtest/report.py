"""Turn a benchmark's results into numbers, a markdown table and a plot.

Pure functions over the ``results.json`` structure written by
:mod:`loadtest.bench`, so a table can be regenerated from an old run
(``python -m loadtest.report results/results.json``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

TARGETS = {
    "idle_per_worker": "≥ 10,000",
    "rss_per_conn_kb": "≤ 12 KB",
    "fixed_p50": "≤ 2 ms",
    "fixed_p99": "≤ 10 ms",
    "max_delivered_per_worker": "≥ 50,000",
    "stored_per_s": "≥ 5,000 (2 workers)",
    "scaling": "≥ 1.4x",
    "peer_ratio": "≥ 1.5x",
}


def percentiles(values: Any) -> dict[str, float | None]:
    """p50/p99/p99.9 in milliseconds (None without samples)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return {"p50": None, "p99": None, "p999": None, "max": None}
    p50, p99, p999 = np.percentile(data, [50, 99, 99.9])
    return {"p50": float(p50), "p99": float(p99), "p999": float(p999),
            "max": float(data.max())}


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return float(np.median(values)) if values else None


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}{unit}"
    return f"{value:.{digits}f}{unit}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render_markdown(results: dict[str, Any]) -> str:
    """The README/docs table: machine facts, one column per system, targets."""
    machine, config = results["machine"], results["config"]
    systems = results["systems"]
    names = [name for name in systems if name != "trivial"]
    lines = [
        f"Measured {results['finished_at']} on {machine['cores']} cores "
        f"({machine['cpu']}), Python {machine['python']}, {machine['platform']}; "
        f"load generator: {config['client_processes']} processes sharing the same cores; "
        f"mode: {'quick' if config['quick'] else 'full'}; tornchat {machine['tornchat_commit']}.",
        "",
        f"Workload: groups of {config['group_size']} (1 sender + {config['group_size'] - 1} "
        f"recipients), {config['groups']} groups, open-loop fixed send rate; latency is send "
        "stamp → arrival at each recipient. Fixed-rate figures are the median of "
        f"{config['repeats']} runs; \"max\" is the highest rate whose p99 ≤ "
        f"{config['p99_limit_ms']:.0f} ms with < 1% loss. tornchat runs with PostgreSQL, "
        "the Redis bus and the outbox"
        + (", relayed to Kafka." if config.get("kafka_broker")
           else " (no Kafka relay: events stay in the outbox table)."),
        "",
    ]
    ceiling = systems.get("trivial", {})
    if ceiling.get("available"):
        best = ceiling["sweep"]["best"] or {}
        lines.append(
            "**Load generator ceiling** (against the trivial server): "
            f"{_fmt(best.get('delivered_per_s'))} delivered msg/s at p99 "
            f"{_fmt(best.get('p99'), ' ms')}; at the fixed rate its own p50/p99 is "
            f"{_fmt(ceiling['fixed']['median'].get('p50'), ' ms', 2)} / "
            f"{_fmt(ceiling['fixed']['median'].get('p99'), ' ms', 2)}. "
            "No figure below can exceed it.")
        lines.append("")
    header = "| figure | " + " | ".join(names) + " | target |"
    lines += [header, "|" + " --- |" * (len(names) + 2)]

    def row(label: str, target_key: str | None, cell: Any) -> None:
        cells = []
        for name in names:
            system = systems[name]
            cells.append(cell(system) if system.get("available") else "n/a")
        target = TARGETS.get(target_key or "", "")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")

    row("worker processes", None, lambda s: str(s["workers"]))
    row("idle authenticated connections held", None,
        lambda s: f"{s['idle']['connected']:,} / {s['idle']['attempted']:,}")
    row("idle connections per worker", "idle_per_worker",
        lambda s: _fmt(s["idle"]["connected"] / s["workers"]))
    row("RSS per idle connection (all workers)", "rss_per_conn_kb",
        lambda s: _fmt(s["idle"]["rss_per_conn_kb"], " KB"))
    rate = config["fixed_rate"]
    recipients = config["group_size"] - 1
    label = f"e2e latency at {rate:,.0f} msg/s x {recipients} recipients"
    row(f"{label}: p50", "fixed_p50", lambda s: _fmt(s["fixed"]["median"]["p50"], " ms", 2))
    row(f"{label}: p99", "fixed_p99", lambda s: _fmt(s["fixed"]["median"]["p99"], " ms", 2))
    row(f"{label}: p99.9", None, lambda s: _fmt(s["fixed"]["median"]["p999"], " ms", 2))
    row(f"{label}: lost (undelivered 2 s after sending)", None,
        lambda s: _pct(median_of(s["fixed"]["runs"], "loss")))
    row("max sustained delivered msg/s (p99 ≤ limit)", None,
        lambda s: _fmt((s["sweep"]["best"] or {}).get("delivered_per_s")))
    row("… per worker", "max_delivered_per_worker",
        lambda s: _fmt((s["sweep"]["best"] or {}).get("delivered_per_s", 0) / s["workers"]))
    row("stored (acknowledged) msg/s at that rate", None,
        lambda s: _fmt((s["sweep"]["best"] or {}).get("acked_per_s")))
    row("p99 at that rate", None, lambda s: _fmt((s["sweep"]["best"] or {}).get("p99"), " ms"))
    row("server CPU per delivered message at that rate", None,
        lambda s: _fmt((s["sweep"]["best"] or {}).get("server_cpu_us_per_delivery"), " µs", 0))
    row("whole machine busy at that rate (all processes)", None,
        lambda s: _pct((s["sweep"]["best"] or {}).get("machine_busy")))
    row("max stored msg/s, 1-to-1 chats (p99 ≤ limit; full mode)", "stored_per_s",
        lambda s: _fmt(((s.get("store_sweep") or {}).get("best") or {}).get("acked_per_s")))
    lines.append("")
    ratios = results.get("ratios", {})
    lines.append("| ratio | measured | target |")
    lines.append("| --- | --- | --- |")
    lines.append(f"| tornchat 2 workers / 1 worker (max delivered msg/s) | "
                 f"{_ratio(ratios.get('scaling'))} | {TARGETS['scaling']} |")
    lines.append(f"| tornchat / python-socketio (max delivered msg/s at equal p99 limit, "
                 f"both 2 processes) | {_ratio(ratios.get('peer'))} | {TARGETS['peer_ratio']} |")
    fixed_ratio = _ratio(ratios.get("peer_fixed_p99"))
    if ratios.get("peer_fixed_p99") is None and (ratios.get("peer_fixed_loss") or 0) >= 0.01:
        fixed_ratio = f"- (python-socketio lost {_pct(ratios['peer_fixed_loss'])} at that rate)"
    lines.append(f"| tornchat / python-socketio, p99 at the fixed rate (lower is better) | "
                 f"{fixed_ratio} | |")
    lines.append(f"| tornchat 2 workers / the seed's design in Node.js, 2 workers (max "
                 f"delivered msg/s) | {_ratio(ratios.get('seed'))} | ≥ 1.5 |")
    lines.append(f"| tornchat / the seed's design, p99 at the fixed rate (lower is better) | "
                 f"{_ratio(ratios.get('seed_fixed_p99'))} | ≤ 1 |")
    notes = [f"- {name}: {s['note']}" for name, s in systems.items() if s.get("note")]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """p50 and p99 latency against delivered msg/s, one colour per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for index, (name, system) in enumerate(results["systems"].items()):
        if not system.get("available"):
            continue
        steps = system["sweep"]["steps"]
        xs = [step["delivered_per_s"] for step in steps]
        colour = f"C{index}"
        ax.plot(xs, [step["p99"] for step in steps], "o-", color=colour, label=f"{name} p99")
        ax.plot(xs, [step["p50"] for step in steps], "x--", color=colour, alpha=0.6,
                label=f"{name} p50")
    limit = results["config"]["p99_limit_ms"]
    ax.axhline(limit, color="grey", linestyle=":", label=f"p99 limit {limit:.0f} ms")
    ax.set_xlabel("delivered messages / s")
    ax.set_ylabel("send → deliver latency (ms)")
    ax.set_yscale("log")
    ax.set_xscale("log")  # the yardstick runs an order of magnitude further
    machine = results["machine"]
    ax.set_title(f"tornchat benchmark — {machine['cores']} cores, Python {machine['python']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    results = json.loads(Path(sys.argv[1]).read_text())
    print(render_markdown(results))


if __name__ == "__main__":
    main()
