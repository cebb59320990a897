"""Capacity model: ``python -m loadtest.capacity [--users 100000 --msgs 2000 ...]``.

Prints how many worker processes, Redis shards and PostgreSQL writes a
deployment needs for a number of users, connections per user, messages per
second and group size, from per-message costs measured on this project's
2-core test machine (docs/performance.md, docs/scaling.md, and
``python -m loadtest.cluster_bench`` for the Redis commands). With no
arguments it prints a table of example deployments. It is a planning aid:
measure your own hardware with the benchmarks and pass the figures in.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

from tornchat.fanout.redis_keys import CLUSTER_PARTITIONS

#: server CPU per delivery with the bus crossing between workers (2 workers,
#: docs/performance.md: 124 µs; one worker alone, skipping Redis, 48 µs)
CPU_PER_DELIVERY_US = 125.0
#: server CPU per stored message on the sending side (frame, parse, batch,
#: Kafka event, acknowledgement), docs/performance.md: 400-600 µs
CPU_PER_STORED_US = 500.0
#: publisher CPU per Redis command on a cluster (redis-py's asyncio cluster
#: pipeline: 60 µs per command in batches of 20, 120 µs alone; docs/scaling.md)
CPU_PER_REDIS_COMMAND_US = 60.0
#: resident memory per idle authenticated connection (loadtest.memprobe)
RSS_PER_CONNECTION_KB = 8.5
#: of one core a worker is planned to use, leaving room for bursts
WORKER_CPU_BUDGET = 0.6
#: connections one worker is planned to hold (heartbeats, refresh batches)
CONNECTIONS_PER_WORKER = 20000
#: simple commands a Redis shard is planned to run per second (one core; a
#: single Redis ran 51,000-76,000 PUBLISH/s from one pipelined client here)
REDIS_COMMANDS_PER_SHARD = 50000
#: messages per PostgreSQL commit at load (group commit; 4 at the median
#: at moderate load, more as load grows)
MESSAGES_PER_COMMIT = 4


@dataclass(frozen=True)
class Load:
    users: int
    online: float  # fraction of users connected at the peak
    connections_per_user: float
    messages_per_second: float
    group_size: int  # members of a conversation, the sender included
    reads_per_message: float = 0.5  # mark_read calls per message

    @property
    def connections(self) -> float:
        return self.users * self.online * self.connections_per_user

    @property
    def deliveries_per_second(self) -> float:
        """Every other member's connections, and the sender's other devices."""
        recipients = (self.group_size - 1) * self.online * self.connections_per_user
        own_devices = max(0.0, self.connections_per_user - 1) * self.online
        return self.messages_per_second * (recipients + own_devices)


def expected_distinct(picks: float, bins: int) -> float:
    """How many of ``bins`` ``picks`` uniform draws hit (partitions, workers)."""
    if bins <= 0:
        return 0.0
    return bins * (1 - (1 - 1 / bins) ** picks)


def workers_needed(load: Load) -> int:
    """Enough cores for the deliveries, the stores and the cluster publishes, and
    enough workers for the connections. The publish cost grows with the worker
    count (more workers hold a message's recipients), so the count is iterated
    to where it stops changing; it settles in a few passes (bounded at 10)."""
    by_connections = math.ceil(load.connections / CONNECTIONS_PER_WORKER)
    workers = max(1, by_connections)
    for _ in range(10):
        cpu = (load.deliveries_per_second * CPU_PER_DELIVERY_US
               + load.messages_per_second * (CPU_PER_STORED_US + CPU_PER_REDIS_COMMAND_US
                                             * redis_commands_per_message(load, workers))) / 1e6
        needed = max(1, math.ceil(cpu / WORKER_CPU_BUDGET), by_connections)
        if needed == workers:
            break
        workers = needed
    return workers


def redis_commands_per_message(load: Load, workers: int) -> float:
    """Routed mode on a cluster: a slot-set read per member and a publish per
    worker that holds a recipient (measured: loadtest.cluster_bench)."""
    connections = load.group_size * load.online * load.connections_per_user
    target_workers = max(0.0, expected_distinct(connections, workers) - 1 / workers)
    return load.group_size + target_workers


@dataclass(frozen=True)
class Plan:
    workers: int
    redis_commands: float
    redis_shards: int
    rss_gb: float
    rows_per_second: float
    commits_per_second: float


def plan(load: Load) -> Plan:
    workers = workers_needed(load)
    redis_commands = (load.messages_per_second
                      * redis_commands_per_message(load, workers))
    # connection slots and presence: a refresh per connection every 30 s (in
    # batches), a connect and a disconnect per connection every ~10 minutes
    redis_commands += load.connections * (1 / 30 + 6 / 600)
    shards = max(1, math.ceil(redis_commands / REDIS_COMMANDS_PER_SHARD))
    # a message row, an outbox event; a read moves a participant row and adds an event
    rows = load.messages_per_second * (2 + 2 * load.reads_per_message)
    return Plan(workers=workers, redis_commands=redis_commands, redis_shards=shards,
                rss_gb=load.connections * RSS_PER_CONNECTION_KB / 1e6,
                rows_per_second=rows,
                commits_per_second=load.messages_per_second / MESSAGES_PER_COMMIT)


EXAMPLES = (
    Load(users=10_000, online=0.3, connections_per_user=1.5, messages_per_second=100,
         group_size=2),
    Load(users=100_000, online=0.3, connections_per_user=1.5, messages_per_second=1000,
         group_size=4),
    Load(users=1_000_000, online=0.2, connections_per_user=1.5, messages_per_second=5000,
         group_size=4),
    Load(users=1_000_000, online=0.2, connections_per_user=2.0, messages_per_second=10000,
         group_size=20),
)


def table(loads: tuple[Load, ...] | list[Load]) -> str:
    lines = [
        "| users | online | conn/user | msg/s | group | connections | deliveries/s | "
        "workers | Redis cmds/s | shards | RSS GB | PG rows/s | PG commits/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for load in loads:
        p = plan(load)
        lines.append(
            f"| {load.users:,} | {load.online:.0%} | {load.connections_per_user:g} | "
            f"{load.messages_per_second:,.0f} | {load.group_size} | {load.connections:,.0f} | "
            f"{load.deliveries_per_second:,.0f} | {p.workers} | {p.redis_commands:,.0f} | "
            f"{p.redis_shards} | {p.rss_gb:.1f} | {p.rows_per_second:,.0f} | "
            f"{p.commits_per_second:,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.capacity",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, help="registered users")
    parser.add_argument("--online", type=float, default=0.3,
                        help="fraction connected at the peak (default 0.3)")
    parser.add_argument("--connections-per-user", type=float, default=1.5,
                        help="devices per connected user (default 1.5)")
    parser.add_argument("--msgs", type=float, default=1000.0,
                        help="messages sent per second at the peak (default 1000)")
    parser.add_argument("--group-size", type=int, default=4,
                        help="members per conversation, the sender included (default 4)")
    args = parser.parse_args(argv)
    if args.users is None:
        loads = list(EXAMPLES)
    else:
        if not (args.users > 0 and 0 < args.online <= 1 and args.connections_per_user >= 1
                and args.msgs >= 0 and args.group_size >= 2):
            parser.error("need users > 0, 0 < online <= 1, connections-per-user >= 1, "
                         "msgs >= 0, group-size >= 2")
        loads = [Load(args.users, args.online, args.connections_per_user, args.msgs,
                      args.group_size)]
    print(table(loads))
    print(f"\nPer-message costs (measured on a 2-core VM): {CPU_PER_DELIVERY_US:.0f} µs of "
          f"server CPU per delivery, {CPU_PER_STORED_US:.0f} µs per stored message, "
          f"{CPU_PER_REDIS_COMMAND_US:.0f} µs per Redis command the publisher sends, "
          f"{RSS_PER_CONNECTION_KB} KB per idle connection; workers planned at "
          f"{WORKER_CPU_BUDGET:.0%} of a core and at most {CONNECTIONS_PER_WORKER:,} "
          f"connections; a Redis shard at {REDIS_COMMANDS_PER_SHARD:,} commands/s "
          f"(routed mode on a cluster; user state in {CLUSTER_PARTITIONS} key partitions).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
