"""Latency under load, the systems alternating step by step:
``python -m loadtest.ladder_bench [--rates 250,500,...] [--systems ...]``.

Not a test. Every system is started once and kept running, each with its own
load-generator pool holding its group connections (groups of 10 by default,
every member on its own connection). Then for each rate, lowest first, every
system gets one open-loop step at that rate, in an order that rotates from
rate to rate, so a neighbour's burst on this shared machine or a slow drift
of the whole box lands on all of them alike. A system that fails a step
(p99 above the limit, anything lost, error frames) is not asked for higher
rates. ``--rounds N`` runs the whole ladder N times; the table gives medians.

The systems: ``tornchat-1w`` and ``tornchat-2w`` (``tornchat serve
--processes 1|2`` on a fresh PostgreSQL database each, the Redis bus, the
outbox relayed to a private Tansu broker unless ``--kafka-broker none``),
``node-seed-2w`` (the seed's design in Node.js, :mod:`loadtest.peer_node`,
on its own private Redis and database) and ``socketio-2p`` (the
python-socketio peer, which stores nothing).

It prints, per rate, each system's p50/p99/loss and server CPU per delivery,
then each system's highest passing rate and tornchat's ratios to the peers
(``results.json`` in ``--out`` keeps every step).

Every system has a Redis of its own. On a shared one, the idle systems'
workers heard the running one's traffic: in pattern mode each of them
received and dropped every message of the step, on the same two cores, and
a one-worker tornchat found the other systems' workers as peers and
published every message it should have kept local. Each step also records
the CPU of the system's Redis per delivery (``redis_cpu_us_per_delivery``),
so a change that moves work from the server into Redis (routed mode's slot
lookups) is not counted as a saving, and the CPU time the hypervisor took
from this virtual machine during the step (``steal_ms``), so a step that a
shared host stalled can be told from one the system lost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.services import fresh_postgres_database, migrated
from loadtest import servers
from loadtest.grouprun import steal_ms
from loadtest.loadgen import ClientPool, Target, raise_fd_limit
from loadtest.steps import Plan, Steps
from loadtest.summary import num, passes

SECRET = "ladder-benchmark-secret-" + "x" * 24
SYSTEMS = ("tornchat-1w", "tornchat-2w", "node-seed-2w", "socketio-2p", "trivial")
#: a step must lose nothing to pass (the issue's "nothing lost"), not merely < 1 %
LOSS_ALLOWED = 0.0


@dataclass
class Running:
    """One system under test, its server and the client pool holding its groups."""

    name: str
    server: servers.Server
    target: Target
    pool: ClientPool
    failed_at: float | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    #: the Redis process the system talks to (None: none)
    redis_pid: int | None = None


def start_system(name: str, stack: contextlib.ExitStack, args: argparse.Namespace,
                 kafka: str | None, out: Path) -> tuple[servers.Server, Target, int | None]:
    """Start ``name`` with a Redis of its own (none for the trivial server);
    ``stack`` stops both (and drops its database) at the end. Returns the
    server, its target and the pid of its Redis."""
    redis_url, redis_pid = "", None
    if name != "trivial":
        redis, redis_url = servers.start_redis(out)
        stack.callback(redis.stop)
        redis_pid = redis.pid
    if name.removeprefix("base-").startswith("tornchat"):
        database_url = stack.enter_context(fresh_postgres_database(
            args.postgres, prefix="tornchat_bench", for_test=False))
        migrated(database_url)
        env = servers.tornchat_env(database_url, redis_url, SECRET, kafka)
        if args.bus_mode:
            env["TORNCHAT_BUS_MODE"] = args.bus_mode
        if name.startswith("base-"):  # the same server, another checkout's code
            # PYTHONSAFEPATH: ``python -m`` would put the working directory (this
            # checkout) ahead of PYTHONPATH and run this code instead
            env.update(PYTHONPATH=str(args.baseline), PYTHONSAFEPATH="1")
        else:
            env.update(setting.split("=", 1) for setting in args.tornchat_env)
        server = servers.tornchat_server(int(name[-2]), env, out)
        kind = "tornchat"
    elif name.startswith("node-seed"):
        if not servers.node_available():
            raise servers.ServerError("Node.js and npm are not installed")
        database_url = stack.enter_context(fresh_postgres_database(
            args.postgres, prefix="tornchat_bench", for_test=False))
        server = servers.node_seed_server(int(name[-2]), database_url, redis_url,
                                          SECRET, out)
        kind = "tornchat"  # it speaks tornchat's protocol
    elif name.startswith("socketio"):
        server = servers.peer_server(int(name[-2]), redis_url, SECRET, out)
        kind = "socketio"
    else:
        server, kind = servers.trivial_server(out), "trivial"
    server.start()
    stack.callback(server.stop)
    return server, Target.local(kind, server.port, SECRET), redis_pid


def rotated(items: list[Running], turn: int) -> list[Running]:
    """``items`` starting at position ``turn`` (mod its length)."""
    if not items:
        return []
    turn %= len(items)
    return items[turn:] + items[:turn]


def run_ladder(systems: list[Running], rates: list[float], steps: Steps, seconds: float,
               warmup: float, p99_limit: float, log: Callable[[str], None],
               turn: int = 0) -> None:
    for index, rate in enumerate(rates):
        live = [system for system in systems if system.failed_at is None]
        for place, system in enumerate(rotated(live, turn + index)):
            steps.wait_quiet(system.server)
            redis_before, stolen = process_cpu(system.redis_pid), steal_ms()
            step = steps.step(system.pool, system.server, rate, seconds, warmup)
            step["steal_ms"] = steal_ms() - stolen
            step["redis_cpu_us_per_delivery"] = per_delivery(
                process_cpu(system.redis_pid) - redis_before, step, seconds, warmup)
            step["passed"] = passes(step, p99_limit) and step["loss"] <= LOSS_ALLOWED
            step["system"], step["place"] = system.name, place  # place in the rate's turn
            system.steps.append(step)
            log(f"  {rate:6.0f} msg/s {system.name:<13} p50 {num(step['p50']):>7} "
                f"p99 {num(step['p99']):>7} ms loss {step['loss']:.2%} "
                f"{num(step['server_cpu_us_per_delivery'], 0):>5} us/delivery "
                f"(+{num(step['redis_cpu_us_per_delivery'], 0)} in Redis) "
                f"steal {step['steal_ms']:.0f} ms {'ok' if step['passed'] else 'FAIL'}")
            if not step["passed"]:
                system.failed_at = rate


def process_cpu(pid: int | None) -> float:
    """Seconds of CPU process ``pid`` has used (0.0 without one, or once it is gone)."""
    if pid is None:
        return 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    return 0.0


def per_delivery(cpu: float, step: dict[str, Any], seconds: float,
                 warmup: float) -> float | None:
    """µs of ``cpu`` (taken over the step, warm-up included) per delivery, the
    way the server's figure is counted."""
    delivered = step.get("delivered_per_s") or 0.0
    if not delivered:
        return None
    return cpu * seconds / (seconds + warmup) / seconds / delivered * 1e6


def _median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def table(results: dict[str, Any]) -> str:
    """Medians over the rounds: one row per rate, p50 / p99 and CPU per system."""
    names = results["systems"]
    by: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for name in names:
        for step in results["steps"][name]:
            by.setdefault((name, step["rate"]), []).append(step)
    rates = sorted({rate for _, rate in by})
    fanout = results["config"]["group_size"] - 1
    head = f"| msg/s x {fanout} | " + " | ".join(
        f"{name} p50 / p99 ms (µs/delivery)" for name in names) + " |"
    lines = [head, "|" + " --- |" * (len(names) + 1)]
    for rate in rates:
        cells = []
        for name in names:
            runs = by.get((name, rate))
            if not runs:
                cells.append("")
                continue
            if not all(run["passed"] for run in runs):
                failed = [run for run in runs if not run["passed"]]
                cells.append(f"fails ({num(failed[0]['p99'])} ms, "
                             f"loss {failed[0]['loss']:.1%})")
                continue
            cells.append(f"{num(_median([r['p50'] for r in runs]))} / "
                         f"{num(_median([r['p99'] for r in runs]))} "
                         f"({num(_median([r['server_cpu_us_per_delivery'] for r in runs]), 0)})")
        lines.append(f"| {rate:,.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def highest_passing(steps: list[dict[str, Any]]) -> float | None:
    """The highest rate below which, and at which, every step of every round
    passed (a failure at a lower rate is not redeemed by a pass above it)."""
    verdict: dict[float, bool] = {}
    for step in steps:
        verdict[step["rate"]] = verdict.get(step["rate"], True) and step["passed"]
    best = None
    for rate, passed in sorted(verdict.items()):
        if not passed:
            break
        best = rate
    return best


def summary(results: dict[str, Any]) -> list[str]:
    lines = []
    best = {name: highest_passing(results["steps"][name]) for name in results["systems"]}
    for name, rate in best.items():
        stored = _median([step["acked_per_s"] for step in results["steps"][name]
                          if step["rate"] == rate])
        lines.append(f"- {name}: highest rate with p99 < {results['config']['p99_limit_ms']:.0f}"
                     f" ms and nothing lost: {num(rate, 0)} msg/s (stored and acknowledged "
                     f"there: {num(stored, 0)} msg/s)")
    ours = best.get("tornchat-2w")
    for peer in ("node-seed-2w", "socketio-2p"):
        theirs = best.get(peer)
        if ours and theirs:
            lines.append(f"- tornchat-2w / {peer}, highest passing rate: "
                         f"{ours / theirs:.2f}x")
    lines.extend(cpu_scaling(results))
    return lines


def cpu_scaling(results: dict[str, Any]) -> list[str]:
    """Server CPU per delivery, 2 workers over 1, at each rate both passed."""
    steps = results["steps"]
    if "tornchat-1w" not in steps or "tornchat-2w" not in steps:
        return []
    ratios = []
    for rate in sorted({step["rate"] for step in steps["tornchat-2w"]}):
        one = _median([s["server_cpu_us_per_delivery"] for s in steps["tornchat-1w"]
                       if s["rate"] == rate and s["passed"]])
        two = _median([s["server_cpu_us_per_delivery"] for s in steps["tornchat-2w"]
                       if s["rate"] == rate and s["passed"]])
        if one and two:
            ratios.append(f"{rate:,.0f}: {two / one:.2f}x ({two:.0f} / {one:.0f} µs)")
    return ["- server CPU per delivery, tornchat 2 workers / 1 worker: " + "; ".join(ratios)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.ladder_bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--systems", default="tornchat-2w,node-seed-2w,socketio-2p",
                        help=f"comma list out of {', '.join(SYSTEMS)}")
    parser.add_argument("--rates", default="250,500,750,1000,1500,2000",
                        help="comma list of messages/s, climbed from the lowest")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--rounds", type=int, default=1, help="times to climb the ladder")
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--group-size", type=int, default=10)
    parser.add_argument("--p99-limit-ms", type=float, default=50.0)
    parser.add_argument("--client-processes", type=int, default=2,
                        help="load-generator processes per system")
    parser.add_argument("--bus-mode", choices=("pattern", "routed"), default=None)
    parser.add_argument("--tornchat-env", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for the tornchat systems (not base-*); repeatable")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout of tornchat: adds base-tornchat-1w/-2w systems "
                             "(named in --systems) that run its code, for before/after runs")
    parser.add_argument("--kafka-broker", default="tansu",
                        help="host:port, 'tansu' (a private broker) or 'none'")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="admin DSN; a fresh database per system")
    parser.add_argument("--out", type=Path, default=None,
                        help="where results.json and the server logs go (default: a temp dir)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = {name.removeprefix("base-") for name in names} - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems: {', '.join(sorted(unknown))}")
    malformed = [setting for setting in args.tornchat_env if "=" not in setting]
    if malformed:
        raise SystemExit(f"--tornchat-env wants KEY=VALUE, got {malformed[0]!r}")
    if any(name.startswith("base-") for name in names) and args.baseline is None:
        raise SystemExit("base-* systems need --baseline DIR (a checkout of tornchat)")
    rates = sorted(float(rate) for rate in args.rates.split(","))
    out: Path = args.out or Path(tempfile.mkdtemp(prefix="ladder-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    raise_fd_limit()
    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {line}", flush=True)

    plan = Plan(argparse.Namespace(quick=True, groups=args.groups, group_size=args.group_size,
                                   fixed_rate=rates[0], repeats=1, idle_per_worker=0,
                                   p99_limit_ms=args.p99_limit_ms, store_sweep=False))
    steps = Steps(plan, log, out, "ladder")
    results: dict[str, Any] = {"config": {**{k: str(v) if isinstance(v, Path) else v
                                             for k, v in vars(args).items()},
                                          "rates": rates}, "systems": names, "steps": {}}
    with contextlib.ExitStack() as stack:
        kafka = None
        if args.kafka_broker == "tansu" and any(n.removeprefix("base-").startswith("tornchat")
                                                for n in names):
            broker, kafka = servers.start_tansu(out)
            stack.callback(broker.stop)
        elif args.kafka_broker not in ("", "none", "tansu"):
            kafka = args.kafka_broker
        running = []
        for name in names:
            server, target, redis_pid = start_system(name, stack, args, kafka, out)
            pool = ClientPool(args.client_processes)
            stack.callback(pool.close)
            groups = [[f"l-{name}-{g}-{m}" for m in range(args.group_size)]
                      for g in range(args.groups)]
            setup = pool.groups(target, groups)
            log(f"{name}: {len(server.worker_pids())} worker(s), {setup['connected']} "
                f"members connected")
            running.append(Running(name, server, target, pool, redis_pid=redis_pid))
        for round_number in range(args.rounds):
            log(f"== round {round_number + 1} of {args.rounds}")
            for system in running:
                system.failed_at = None
            run_ladder(running, rates, steps, args.seconds, args.warmup,
                       args.p99_limit_ms, log, turn=round_number)
        results["steps"] = {system.name: system.steps for system in running}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print()
    print(f"{args.groups} groups of {args.group_size}, {args.seconds:.0f} s steps, "
          f"{args.rounds} round(s), systems alternating at every step; medians:\n")
    print(table(results))
    print()
    print("\n".join(summary(results)))
    log(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
