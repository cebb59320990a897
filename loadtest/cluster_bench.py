"""Redis cost per message: ``python -m loadtest.cluster_bench [--rate 200] [--seconds 6]``.

Not a test. Two ``tornchat serve --processes 2`` instances (four workers) on
PostgreSQL carry group chats at a fixed send rate, three times:

- ``pattern`` mode on one private Redis (the default scheme),
- ``routed`` mode on one private Redis,
- ``routed`` mode on a private 3-master Redis Cluster (sharded pub/sub).

For each it prints what Redis did per message sent: every command Redis ran,
counted by ``INFO commandstats`` (commands a Lua script calls included), with
the idle rate of the same deployment (heartbeats, presence sweeps, health
probes) measured over as long and subtracted; the commands per message of
the busiest kind; on the cluster, how the work spread over the shards; and
the deliveries and their latency (send to ``new_message``). Each member of a
group sits on its own connection, spread over both instances.

The deployment, Redis and the load generator share this machine; compare the
rows, not the absolute latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

from harness.cluster import start_instances, stop_all
from harness.ports import free_port
from harness.redis_cluster import private_redis_cluster
from harness.redis_server import RedisServer, command_calls
from harness.server import TEST_SECRET, ServerProcess
from harness.services import fresh_postgres_database, migrated
from harness.wsclient import WsClient, authed

BENCH_ENV = {"TORNCHAT_RATE_LIMIT_PER_SECOND": "100000", "TORNCHAT_RATE_LIMIT_BURST": "100000"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Stats:
    """``INFO commandstats`` of a set of Redis nodes, per node and command."""

    def __init__(self, nodes: list[RedisServer]) -> None:
        self.nodes = nodes

    def snapshot(self) -> dict[int, dict[str, int]]:
        return {node.port: command_calls(node.port) for node in self.nodes}


def delta(after: dict[int, dict[str, int]], before: dict[int, dict[str, int]]
          ) -> dict[int, dict[str, int]]:
    return {port: {name: count - before.get(port, {}).get(name, 0)
                   for name, count in commands.items()}
            for port, commands in after.items()}


def minus_info(calls: dict[int, dict[str, int]]) -> dict[int, dict[str, int]]:
    """Without the benchmark's own INFO calls."""
    return {port: {name: count for name, count in commands.items() if name != "info"}
            for port, commands in calls.items()}


async def run_load(servers: list[ServerProcess], groups: int, members: int, rate: float,
                   seconds: float, stats: Stats
                   ) -> tuple[int, int, list[float], dict[int, dict[str, int]], float]:
    """(messages sent, deliveries received, latencies in seconds, the commands Redis
    ran while they were sent and delivered, how long that took)."""
    run = uuid.uuid4().hex[:6]
    clients: list[list[WsClient]] = []
    conversations: list[str] = []
    for g in range(groups):
        users = [f"g{g}m{m}-{run}" for m in range(members)]
        group = [await authed(servers[(g + m) % len(servers)].ws_url, TEST_SECRET, user)
                 for m, user in enumerate(users)]
        ack = await group[0].request({"type": "send_message", "recipientIds": users[1:],
                                      "content": "0"})
        conversations.append(ack["data"]["conversationId"])
        clients.append(group)
        for member in group[1:]:
            await member.expect("new_message")
    latencies: list[float] = []
    received = 0
    stop = asyncio.Event()

    async def receive(client: WsClient) -> None:
        nonlocal received
        while not stop.is_set():
            try:
                frame = await client.recv(0.5)
            except TimeoutError:
                continue
            if frame["type"] == "new_message":
                received += 1
                latencies.append(time.perf_counter() - float(frame["data"]["content"]))

    async def drain_acks(client: WsClient) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await client.recv(0.5)

    tasks = [asyncio.create_task(receive(member)) for group in clients for member in group[1:]]
    tasks += [asyncio.create_task(drain_acks(group[0])) for group in clients]
    before = stats.snapshot()
    began = time.monotonic()
    sent = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    while (now := loop.time()) - start < seconds:
        due = int((now - start) * rate)
        while sent < due:
            g = sent % groups
            await clients[g][0].send({"type": "send_message", "conversationId": conversations[g],
                                      "content": repr(time.perf_counter())})
            sent += 1
        await asyncio.sleep(0.002)
    await asyncio.sleep(1.5)  # the last deliveries
    busy = minus_info(delta(stats.snapshot(), before))
    elapsed = time.monotonic() - began
    stop.set()
    await asyncio.gather(*tasks)
    for group in clients:
        for client in group:
            client.close()
    return sent, received, latencies, busy, elapsed


@contextlib.contextmanager
def redis_variant(name: str, workdir: str) -> Iterator[tuple[str, Stats]]:
    if name == "cluster":
        with private_redis_cluster(workdir) as cluster:
            yield cluster.url, Stats(cluster.nodes)
        return
    server = RedisServer(free_port(), workdir).start()
    try:
        yield server.url, Stats([server])
    finally:
        server.kill()


def row(label: str, variant: str, mode: str, args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory() as workdir, \
            redis_variant(variant, workdir) as (url, stats), \
            fresh_postgres_database(for_test=False) as database_url:
        servers = start_instances({**BENCH_ENV, "DATABASE_URL": migrated(database_url),
                                   "REDIS_URL": url, "TORNCHAT_BUS_MODE": mode})
        try:
            time.sleep(1.0)
            idle_before = stats.snapshot()
            time.sleep(args.seconds)
            idle = minus_info(delta(stats.snapshot(), idle_before))
            sent, received, latencies, busy, elapsed = asyncio.run(
                run_load(servers, args.groups, args.members, args.rate, args.seconds, stats))
        finally:
            stop_all(servers)
    # the idle rate over as long as the load ran is subtracted
    scale = elapsed / args.seconds
    per_node = {port: sum(busy[port].values()) - scale * sum(idle.get(port, {}).values())
                for port in busy}
    commands = sum(per_node.values())
    kinds: dict[str, float] = {}
    for port, calls in busy.items():
        for name, count in calls.items():
            kinds[name] = kinds.get(name, 0) + count - scale * idle.get(port, {}).get(name, 0)
    top = sorted(((count, name) for name, count in kinds.items() if count / sent >= 0.05),
                 reverse=True)[:4]
    spread = ""
    if len(per_node) > 1:
        shares = sorted(100 * count / commands for count in per_node.values())
        spread = " / ".join(f"{share:.0f}%" for share in shares)
    kinds_text = ", ".join(f"{name} {count / sent:.2f}" for count, name in top)
    return (f"| {label:<26} | {sent:>6} | {received:>8} | {commands / sent:>9.2f} | "
            f"{kinds_text:<44} | {spread or '1 node':<15} | "
            f"{1000 * percentile(latencies, 0.5):>6.1f} | "
            f"{1000 * percentile(latencies, 0.99):>6.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.cluster_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="messages sent per second")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds of load per row")
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--members", type=int, default=5, help="members per group")
    args = parser.parse_args()
    print(f"{args.groups} groups of {args.members} (one sender each, every member on its own "
          f"connection, spread over 2 instances x 2 workers), {args.rate:.0f} msg/s for "
          f"{args.seconds:.0f} s, PostgreSQL\n")
    print("| Redis                      | sent   | delivered | cmds/msg  | "
          "busiest commands per message                 | share per shard | p50 ms | p99 ms |")
    print("|----------------------------|--------|-----------|-----------|"
          "----------------------------------------------|-----------------|--------|--------|")
    for label, variant, mode in (("one Redis, pattern", "single", "pattern"),
                                 ("one Redis, routed", "single", "routed"),
                                 ("3-shard cluster, routed", "cluster", "routed")):
        print(row(label, variant, mode, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
