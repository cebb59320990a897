"""The benchmark's step runner: idle connections, fixed-rate runs, rate sweeps,
profiles, each against one running server with the load generator's pool.

:class:`Plan` says how long and how big (quick or full run); :class:`Steps`
measures and logs, returning plain JSON-able dicts (:mod:`loadtest.summary`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from loadtest import profiling, report, servers
from loadtest.loadgen import ClientPool, Target
from loadtest.summary import machine_busy, num, passes, summarize


class Plan:
    """Durations and sizes for one mode (quick or full)."""

    def __init__(self, args: argparse.Namespace) -> None:
        quick = args.quick
        self.quick = quick
        self.groups = args.groups or (40 if quick else 100)
        self.group_size = args.group_size
        self.fixed_rate = args.fixed_rate
        self.repeats = args.repeats or (1 if quick else 3)
        self.idle_per_worker = args.idle_per_worker or (500 if quick else 10_000)
        self.p99_limit = args.p99_limit_ms
        self.fixed_seconds, self.fixed_warmup = (3.0, 1.0) if quick else (10.0, 2.0)
        self.step_seconds, self.step_warmup = (2.0, 0.5) if quick else (5.0, 1.5)
        self.drain = 1.0 if quick else 2.0
        self.sweep_start = 150.0 if quick else 100.0
        self.sweep_factor = 2.0
        self.sweep_steps = 8 if quick else 10
        self.bisections = 1 if quick else 3
        self.confirm_failures = not quick  # re-measure a failing rate once
        self.store_sweep = args.store_sweep or not quick
        self.store_pairs = 500
        self.store_sweep_start = 200.0
        self.quiet_timeout = 8.0 if quick else 30.0


class Steps:
    """Measurements on one server; ``run_id`` keeps user ids apart between runs."""

    def __init__(self, plan: Plan, log: Callable[[str], None], out: Path, run_id: str) -> None:
        self.plan = plan
        self.log = log
        self.out = out
        self.run_id = run_id

    def measure_idle(self, pool: ClientPool, server: servers.Server, target: Target,
                     name: str, workers: int) -> dict[str, Any]:
        """Idle authenticated connections and the RSS they add, all workers summed."""
        attempted = self.plan.idle_per_worker * workers
        time.sleep(0.5)
        baseline = server.rss_bytes()
        users = [f"idle-{self.run_id}-{name}-{i}" for i in range(attempted)]
        started = time.perf_counter()
        opened = pool.idle(target, users)
        time.sleep(1.5)
        loaded = server.rss_bytes()
        _, health = server.health() if server.health_path else (0, {})
        pool.close_idle()
        connected = opened["connected"]
        result = {"attempted": attempted, "connected": connected, "failed": opened["failed"],
                  "first_error": opened["first_error"],
                  "connect_seconds": time.perf_counter() - started,
                  "rss_baseline_mb": baseline / 2**20, "rss_loaded_mb": loaded / 2**20,
                  "rss_per_conn_kb": ((loaded - baseline) / connected / 1024
                                      if connected else None),
                  "server_reported_connections": health.get("connections")}
        self.log(f"  idle: {connected}/{attempted} connections, "
                 f"{num(result['rss_per_conn_kb'])} KB each "
                 f"({result['connect_seconds']:.1f}s)")
        return result

    def step(self, pool: ClientPool, server: servers.Server, rate: float, seconds: float,
             warmup: float) -> dict[str, Any]:
        cpu_before = server.cpu_seconds()
        machine_before = psutil.cpu_times()
        result = pool.run(rate, seconds, warmup, self.plan.drain)
        # the server's CPU over the whole step (warm-up included) per measured second
        server_cpu = (server.cpu_seconds() - cpu_before) * seconds / (seconds + warmup)
        step = summarize(result, server_cpu)
        step["machine_busy"] = machine_busy(machine_before, psutil.cpu_times())
        return step

    def measure_fixed(self, pool: ClientPool, server: servers.Server,
                      repeats: int) -> dict[str, Any]:
        runs = []
        for _ in range(repeats):
            self.wait_quiet(server)
            run = self.step(pool, server, self.plan.fixed_rate, self.plan.fixed_seconds,
                            self.plan.fixed_warmup)
            runs.append(run)
            self.log(f"  fixed {self.plan.fixed_rate:.0f} msg/s: p50 {num(run['p50'])} "
                     f"p99 {num(run['p99'])} p99.9 {num(run['p999'])} ms, "
                     f"loss {run['loss']:.2%}, lag {run['lag_ms']:.0f} ms, "
                     f"machine {run['machine_busy']:.0%} busy")
        median = {key: report.median_of(runs, key)
                  for key in ("p50", "p99", "p999", "delivered_per_s", "acked_per_s")}
        return {"runs": runs, "median": median}

    def wait_quiet(self, server: servers.Server) -> float:
        """Let a server work off any backlog (CPU < 0.1 core) before the next phase."""
        started = time.perf_counter()
        while time.perf_counter() - started < self.plan.quiet_timeout:
            before = server.cpu_seconds()
            time.sleep(0.5)
            if server.cpu_seconds() - before < 0.05:
                break
        return time.perf_counter() - started

    def sweep(self, pool: ClientPool, server: servers.Server,
              start: float | None = None) -> dict[str, Any]:
        """Double the rate until a step fails (p99 over the limit, loss or errors),
        then bisect between the last pass and the first failure."""
        plan = self.plan
        steps: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        failed_at: float | None = None

        def measure(rate: float) -> dict[str, Any]:
            step = self.step(pool, server, rate, plan.step_seconds, plan.step_warmup)
            step["passed"] = passes(step, plan.p99_limit)
            steps.append(step)
            self.log(f"  sweep {rate:7.0f} msg/s -> {step['delivered_per_s']:9.0f} delivered/s"
                     f" p99 {num(step['p99']):>7} ms loss {step['loss']:.2%} "
                     f"server {num(step['server_cpu_cores'], 2)} cores "
                     f"{num(step['server_cpu_us_per_delivery'], 0)} us/delivery "
                     f"machine {step['machine_busy']:.0%} busy "
                     f"{'ok' if step['passed'] else 'FAIL'}")
            if not step["passed"]:
                self.wait_quiet(server)
            return step

        def attempt(rate: float) -> bool:
            """In a full run a rate fails only if it fails twice: a neighbour's
            burst on the shared cores must not end the sweep."""
            nonlocal best, failed_at
            step = measure(rate)
            if not step["passed"] and plan.confirm_failures:
                step = measure(rate)
            if step["passed"]:
                if best is None or step["delivered_per_s"] > best["delivered_per_s"]:
                    best = step
            else:
                failed_at = rate
            return bool(step["passed"])

        rate = start or plan.sweep_start
        for _ in range(plan.sweep_steps):
            if not attempt(rate):
                break
            rate *= plan.sweep_factor
        low = best["rate"] if best else 0.0
        for _ in range(plan.bisections if failed_at else 0):
            assert failed_at is not None
            middle = (low + failed_at) / 2 if low else failed_at / 2
            if attempt(middle):
                low = middle
            if failed_at - low < 0.05 * failed_at:
                break
        return {"steps": sorted(steps, key=lambda step: step["rate"]), "best": best}

    def store_sweep(self, pool: ClientPool, server: servers.Server, target: Target,
                    name: str) -> dict[str, Any]:
        """Storage-bound load: 1-to-1 chats (one delivery per message), swept like
        the group load; its best acknowledged rate is the stored msg/s figure."""
        pool.reset()
        self.wait_quiet(server)
        pairs = [[f"s-{self.run_id}-{name}-{i}-{m}" for m in range(2)]
                 for i in range(self.plan.store_pairs)]
        pool.groups(target, pairs)
        self.log(f"  store sweep: {len(pairs)} 1-to-1 conversations")
        return self.sweep(pool, server, start=self.plan.store_sweep_start)

    def profile(self, pool: ClientPool, server: servers.Server, name: str) -> dict[str, Any]:
        """py-spy every worker during a fixed-rate step; top functions per worker."""
        seconds = self.plan.fixed_seconds
        recorders = {pid: profiling.start_record(pid, seconds + self.plan.fixed_warmup,
                                                 self.out / f"profile-{name}-{pid}.txt")
                     for pid in server.worker_pids()}
        step = self.step(pool, server, self.plan.fixed_rate, seconds, self.plan.fixed_warmup)
        workers: dict[str, dict[str, Any]] = {}
        for pid, recorder in recorders.items():
            _, errors = recorder.communicate(timeout=60)
            path = self.out / f"profile-{name}-{pid}.txt"
            if recorder.returncode != 0 or not path.exists():
                workers[str(pid)] = {"error": errors.decode(errors="replace")[-500:]}
                continue
            workers[str(pid)] = profiling.summarize(path)
            top = ", ".join(f"{fn} {pct}%" for fn, pct in workers[str(pid)]["self_pct"][:5])
            self.log(f"  profile pid {pid}: {top}")
        return {"rate": self.plan.fixed_rate, "step": step, "workers": workers}
