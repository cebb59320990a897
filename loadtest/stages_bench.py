"""Where a message waits: ``python -m loadtest.stages_bench [--rates 500,1000]``.

Not a test. ``tornchat serve --processes 2`` on PostgreSQL and a private
Redis, with ``TORNCHAT_STAGE_TIMING=1``; groups of 10 members (every member
on its own connection) carry an open-loop fixed send rate from the
benchmark's load generator (:mod:`loadtest.loadgen`). For each rate it prints
the end-to-end send-to-deliver p50/p99 the clients saw and, from the
``tornchat_stage_seconds`` histograms on ``/metrics`` (the difference over
the step), each stage's mean and approximate p50/p99 (bucket bounds):

queue (to the group-commit writer) → database (statement and commit) →
handoff (writer thread to the IOLoop) → publish (the bus's publish queue) →
redis (taken for Redis to the receiving worker's listener thread) →
handover (listener thread to its IOLoop) → order (held for a lower seq;
held messages only) → write (frames to the sockets).

The servers, PostgreSQL, Redis and the load generator share this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import urllib.request
from pathlib import Path

from harness.services import fresh_postgres_database, migrated
from loadtest import servers
from loadtest.loadgen import ClientPool, Target, raise_fd_limit
from loadtest.summary import summarize
from tornchat.metrics import STAGES

SECRET = "stages-benchmark-secret-" + "x" * 24


def histograms(port: int) -> dict[str, tuple[dict[float, float], float, float]]:
    """Per stage: cumulative bucket counts by upper bound, the sum and the count."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found: dict[str, tuple[dict[float, float], float, float]] = {}
    for line in text.splitlines():
        if not line.startswith("tornchat_stage_seconds"):
            continue
        name, value = line.rsplit(" ", 1)
        stage = name.split('stage="')[1].split('"')[0]
        buckets, total, count = found.get(stage, ({}, 0.0, 0.0))
        if name.startswith("tornchat_stage_seconds_bucket"):
            bound = name.split('le="')[1].split('"')[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(value)
        elif name.startswith("tornchat_stage_seconds_sum"):
            total = float(value)
        elif name.startswith("tornchat_stage_seconds_count"):
            count = float(value)
        found[stage] = (buckets, total, count)
    return found


def quantile(buckets: dict[float, float], q: float) -> float:
    """The upper bound of the bucket the q-quantile falls in (seconds)."""
    total = buckets.get(float("inf"), 0.0)
    if total <= 0:
        return float("nan")
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return bound
    return float("inf")


def stage_rows(before: dict[str, tuple[dict[float, float], float, float]],
               after: dict[str, tuple[dict[float, float], float, float]]) -> list[str]:
    rows = []
    for stage in STAGES:
        buckets_after, sum_after, count_after = after.get(stage, ({}, 0.0, 0.0))
        buckets_before, sum_before, count_before = before.get(stage, ({}, 0.0, 0.0))
        count = count_after - count_before
        if count <= 0:
            rows.append(f"| {stage:<9} | {0:>8} | {'-':>9} | {'-':>9} | {'-':>9} |")
            continue
        buckets = {bound: value - buckets_before.get(bound, 0.0)
                   for bound, value in buckets_after.items()}
        mean = (sum_after - sum_before) / count
        p50, p99 = quantile(buckets, 0.5), quantile(buckets, 0.99)
        rows.append(f"| {stage:<9} | {count:>8.0f} | {1000 * mean:>9.2f} | "
                    f"≤{1000 * p50:>8.2f} | ≤{1000 * p99:>8.2f} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.stages_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="500,1000", help="comma list of messages/s")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per rate")
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--group-size", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2, help="tornchat worker processes")
    parser.add_argument("--bus-mode", default="pattern", choices=("pattern", "routed"))
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--postgres", default=None, help="admin DSN (default: the local one)")
    args = parser.parse_args()
    raise_fd_limit()
    rates = [float(rate) for rate in args.rates.split(",")]
    out = Path(tempfile.mkdtemp(prefix="stages-bench-"))
    with contextlib.ExitStack() as stack:
        redis, redis_url = servers.start_redis(out)
        stack.callback(redis.stop)
        dsn_args = (args.postgres,) if args.postgres else ()
        database_url = stack.enter_context(fresh_postgres_database(
            *dsn_args, prefix="tornchat_bench", for_test=False))
        migrated(database_url)
        env = {**servers.tornchat_env(database_url, redis_url, SECRET),
               "TORNCHAT_STAGE_TIMING": "1", "TORNCHAT_BUS_MODE": args.bus_mode}
        server = servers.tornchat_server(args.processes, env, out).start()
        stack.callback(server.stop)
        pool = ClientPool(args.client_processes)
        stack.callback(pool.close)
        target = Target.local("tornchat", server.port, SECRET)
        groups = [[f"st-{g}-{m}" for m in range(args.group_size)] for g in range(args.groups)]
        pool.groups(target, groups)
        print(f"{args.groups} groups of {args.group_size}, {args.processes} workers "
              f"({args.bus_mode} mode), PostgreSQL + Redis, {args.seconds:.0f} s per rate\n")
        for rate in rates:
            before = histograms(server.port)
            cpu_before = server.cpu_seconds()
            result = pool.run(rate, args.seconds, 1.5, 2.0)
            step = summarize(result, server.cpu_seconds() - cpu_before)
            after = histograms(server.port)
            print(f"### {rate:.0f} msg/s x {args.group_size - 1}: clients saw p50 "
                  f"{step['p50']:.1f} ms, p99 {step['p99']:.1f} ms, loss {step['loss']:.2%}\n")
            print("| stage     | messages | mean ms   | p50 ms    | p99 ms    |")
            print("|-----------|----------|-----------|-----------|-----------|")
            for row in stage_rows(before, after):
                print(row)
            print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
