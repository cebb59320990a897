"""One benchmark run: start each system under test, measure it, collect the results.

The systems are the trivial server, ``tornchat serve --processes 1|2`` (on a
fresh PostgreSQL database each), the seed's design in Node.js
(``loadtest/peer_node``, its own Redis and database) and the python-socketio peer, sharing one
private redis-server and, for tornchat, a private Tansu broker
(:mod:`loadtest.servers`); the measurements are :mod:`loadtest.steps`'.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.services import fresh_postgres_database, migrated
from loadtest import servers
from loadtest.loadgen import ClientPool, Target, raise_fd_limit
from loadtest.steps import Plan, Steps
from loadtest.summary import ratios

SECRET = "benchmark-secret-" + "x" * 32
SYSTEMS = ("trivial", "tornchat-1w", "tornchat-2w", "node-seed-2w", "socketio-2p")


def machine_facts() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], check=True, capture_output=True, text=True,
                                  cwd=Path(__file__).parent).stdout.strip()

        commit = git("rev-parse", "--short", "HEAD")
        if git("status", "--porcelain", "--", "../tornchat"):
            commit += " + uncommitted changes in tornchat/"
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.release()}",
            "tornchat_commit": commit, "load_average_at_start": list(os.getloadavg())}


class Bench:
    def __init__(self, args: argparse.Namespace, log: Callable[[str], None]) -> None:
        self.args = args
        self.plan = Plan(args)
        self.log = log
        self.out: Path = args.out
        self.steps = Steps(self.plan, log, self.out, uuid.uuid4().hex[:6])

    # -- systems --------------------------------------------------------------

    def run_system(self, pool: ClientPool, name: str, server: servers.Server, target: Target,
                   workers: int, idle: bool = True) -> dict[str, Any]:
        result: dict[str, Any] = {"available": True, "workers": workers, "url": target.url}
        try:
            if idle:
                result["idle"] = self.steps.measure_idle(pool, server, target, name, workers)
                self.steps.wait_quiet(server)  # closing thousands of connections takes a while
            groups = [[f"u-{self.steps.run_id}-{name}-{g}-{m}" for m in range(self.plan.group_size)]
                      for g in range(self.plan.groups)]
            setup = pool.groups(target, groups)
            self.log(f"  {setup['connected']} group members connected in "
                     f"{setup['seconds']:.1f}s")
            result["sweep"] = self.steps.sweep(pool, server)
            result["fixed"] = self.steps.measure_fixed(pool, server, self.plan.repeats)
            if self.args.profile and name.startswith("tornchat"):
                self.steps.wait_quiet(server)
                result["profile"] = self.steps.profile(pool, server, name)
            result["rss_after_mb"] = server.rss_bytes() / 2**20
            if name.startswith("tornchat") and self.plan.store_sweep:
                result["store_sweep"] = self.steps.store_sweep(pool, server, target, name)
        finally:
            pool.reset()
        return result

    def tornchat(self, pool: ClientPool, redis_url: str, processes: int,
                 kafka: str | None) -> dict[str, Any]:
        name = f"tornchat-{processes}w"
        with fresh_postgres_database(self.args.postgres, prefix="tornchat_bench",
                                     for_test=False) as database_url:
            env = servers.tornchat_env(database_url, redis_url, SECRET, kafka)
            if self.args.bus_mode:
                env["TORNCHAT_BUS_MODE"] = self.args.bus_mode
            migrated(database_url)
            server = servers.tornchat_server(processes, env, self.out).start()
            try:
                workers = len(server.worker_pids())
                _, health = server.health()
                bus = (health.get("dependencies") or {}).get("redis")
                self.log(f"  pids {server.pids()}, redis bus: {bus}")
                if processes > 1 and (workers < processes or bus != "ok"):
                    note = (f"--processes {processes} is not available yet: {workers} worker "
                            f"process(es), redis bus '{bus}' (needs issue 3's Redis bus)")
                    self.log(f"  SKIPPED: {note}")
                    return {"available": False, "note": note}
                target = Target.local("tornchat", server.port, SECRET)
                result = self.run_system(pool, name, server, target, workers)
                result["redis_bus"] = bus
                result["kafka"] = (health.get("dependencies") or {}).get("kafka")
                result["stored_rows"] = servers.count_rows(database_url, "message")
                if bus != "ok":
                    result["note"] = f"redis bus '{bus}': single-process in-memory bus"
                return result
            finally:
                server.stop()

    def peer(self, pool: ClientPool, redis_url: str, processes: int = 2) -> dict[str, Any]:
        server = servers.peer_server(processes, redis_url, SECRET, self.out).start()
        try:
            target = Target.local("socketio", server.port, SECRET)
            result = self.run_system(pool, f"socketio-{processes}p", server, target,
                                     len(server.worker_pids()))
            result["note"] = "python-socketio stores nothing (no PostgreSQL, no outbox)"
            return result
        finally:
            server.stop()

    def node_seed(self, pool: ClientPool, processes: int = 2) -> dict[str, Any]:
        """The seed's design in Node.js on its own private Redis and a fresh database."""
        if not servers.node_available():
            return {"available": False, "note": "Node.js and npm are not installed"}
        redis, redis_url = servers.start_redis(self.out)
        try:
            with fresh_postgres_database(self.args.postgres, prefix="tornchat_bench",
                                         for_test=False) as database_url:
                server = servers.node_seed_server(processes, database_url, redis_url, SECRET,
                                                  self.out).start()
                try:
                    target = Target.local("tornchat", server.port, SECRET)
                    result = self.run_system(pool, f"node-seed-{processes}w", server, target,
                                             len(server.worker_pids()))
                    result["stored_rows"] = servers.count_rows(database_url, "seed_message")
                    result["note"] = ("the seed's design: INSERT + UPDATE per message, PUBLISH "
                                      "chat:{id}, PSUBSCRIBE chat:*; no outbox, no seq")
                    return result
                finally:
                    server.stop()
        finally:
            redis.stop()

    def trivial(self, pool: ClientPool) -> dict[str, Any]:
        server = servers.trivial_server(self.out).start()
        try:
            target = Target.local("trivial", server.port, SECRET)
            return self.run_system(pool, "trivial", server, target, 1, idle=False)
        finally:
            server.stop()

    def kafka_broker(self, stack: contextlib.ExitStack, wanted: list[str]) -> str | None:
        choice = self.args.kafka_broker
        if choice in ("", "none") or not any(name.startswith("tornchat") for name in wanted):
            return None
        if choice != "tansu":
            return str(choice)
        try:
            broker, bootstrap = servers.start_tansu(self.out)
        except servers.ServerError as exc:
            self.log(f"Kafka relay off: {exc}")
            return None
        stack.callback(broker.stop)
        self.log(f"Kafka: private Tansu broker at {bootstrap}")
        return bootstrap

    # -- the run --------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        fd_limit = raise_fd_limit()
        wanted = [name.strip() for name in self.args.systems.split(",") if name.strip()]
        unknown = set(wanted) - set(SYSTEMS)
        if unknown:
            raise SystemExit(f"unknown systems: {', '.join(sorted(unknown))}")
        results: dict[str, Any] = {
            "machine": machine_facts(),
            "config": {"quick": self.plan.quick, "client_processes": self.args.client_processes,
                       "groups": self.plan.groups, "group_size": self.plan.group_size,
                       "fixed_rate": self.plan.fixed_rate, "repeats": self.plan.repeats,
                       "idle_per_worker": self.plan.idle_per_worker,
                       "p99_limit_ms": self.plan.p99_limit, "fd_limit": fd_limit,
                       "kafka_broker": self.args.kafka_broker, "systems": wanted,
                       "bus_mode": self.args.bus_mode or "default"},
            "systems": {},
        }
        with contextlib.ExitStack() as stack:
            redis_url = self.args.redis_url
            if redis_url is None and any(name != "trivial" for name in wanted):
                redis, redis_url = servers.start_redis(self.out)
                stack.callback(redis.stop)
            kafka = self.kafka_broker(stack, wanted)
            results["config"]["kafka_broker"] = kafka
            pool = ClientPool(self.args.client_processes)
            stack.callback(pool.close)
            for name in wanted:
                self.log(f"== {name}")
                started = time.perf_counter()
                try:
                    if name == "trivial":
                        outcome = self.trivial(pool)
                    elif name.startswith("tornchat"):
                        outcome = self.tornchat(pool, redis_url, int(name[-2]), kafka)
                    elif name.startswith("node-seed"):
                        outcome = self.node_seed(pool, int(name[-2]))
                    else:
                        outcome = self.peer(pool, redis_url)
                except (servers.ServerError, RuntimeError, TimeoutError) as exc:
                    self.log(f"  FAILED: {exc}")
                    outcome = {"available": False, "note": f"failed: {str(exc)[:300]}"}
                outcome["seconds"] = time.perf_counter() - started
                results["systems"][name] = outcome
        results["ratios"] = ratios(results["systems"])
        results["finished_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        return results
