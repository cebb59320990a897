"""Bus benchmark: ``python -m loadtest.bus_bench [--seconds 8] [--pairs 40]``.

Not a test. It prints:

1. delivered messages per second and send-to-deliver p50/p99 of
   ``tornchat serve --processes N`` on PostgreSQL and Redis, for 1 worker,
   2 workers in ``pattern`` mode and 2 workers in ``routed`` mode. Each pair
   is a sender on one connection and its receiver on another; every sender
   keeps one message in flight (send, await ``message_sent``, repeat), and
   the receiver measures latency from a send timestamp carried in the content;
2. the cost of the pattern subscription: CPU microseconds a worker spends on
   a message none of its connections wants (received by the listener thread,
   handed to the IOLoop, decoded, looked up, dropped), which every worker pays
   for every message in ``pattern`` mode and no worker pays in ``routed`` mode;
3. what a publish costs Redis in each mode (publishes per second from one
   pipelined client: ``PUBLISH`` vs the routing Lua script).

The load generator runs on the same machine as the servers (2 cores here),
so absolute numbers understate a dedicated server; compare the rows.
Needs PostgreSQL (``TORNCHAT_TEST_POSTGRES``) and Redis (``TORNCHAT_TEST_REDIS``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import sys
import time
import uuid

import redis

from harness.cluster import start_instances, stop_all
from harness.server import TEST_SECRET
from harness.services import REDIS_TEST_URL, fresh_postgres_database, migrated
from harness.wsclient import authed
from tornchat.fanout.bus import MESSAGE, Delivery
from tornchat.fanout.redis_bus import RedisBus
from tornchat.fanout.redis_slots import slot_key, slot_member
from tornchat.fanout.redis_wire import CHANNEL_PREFIX, ROUTED_PUBLISH, encode, origin_of
from tornchat.metrics import Metrics

BENCH_ENV = {"TORNCHAT_RATE_LIMIT_PER_SECOND": "100000", "TORNCHAT_RATE_LIMIT_BURST": "100000"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def drive(url: str, pairs: int, seconds: float, warmup: float) -> tuple[float, list[float]]:
    run = uuid.uuid4().hex[:6]
    senders, receivers = [], []
    for i in range(pairs):
        senders.append(await authed(url, TEST_SECRET, f"s{i}-{run}"))
        receivers.append(await authed(url, TEST_SECRET, f"r{i}-{run}"))
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    latencies: list[float] = []

    async def send_loop(i: int) -> None:
        client = senders[i]
        target: dict[str, object] = {"recipientIds": [f"r{i}-{run}"]}
        while loop.time() < stop_at:
            await client.send({"type": "send_message", **target,
                               "content": repr(time.perf_counter())})
            while (frame := await client.recv(30))["type"] != "message_sent":
                pass
            target = {"conversationId": frame["data"]["conversationId"]}

    async def receive_loop(i: int) -> None:
        client = receivers[i]
        with contextlib.suppress(TimeoutError):
            while True:
                frame = await client.recv(2.0)
                if frame["type"] != "new_message":
                    continue
                now = time.perf_counter()
                if measure_from <= loop.time() <= stop_at:
                    latencies.append(now - float(frame["data"]["content"]))

    await asyncio.gather(*(send_loop(i) for i in range(pairs)),
                         *(receive_loop(i) for i in range(pairs)))
    for client in senders + receivers:
        client.close()
    return len(latencies) / seconds, latencies


def server_row(label: str, processes: int, mode: str, args: argparse.Namespace) -> str:
    with fresh_postgres_database(for_test=False) as database_url:
        env = {**BENCH_ENV, "DATABASE_URL": migrated(database_url), "REDIS_URL": args.redis,
               "TORNCHAT_BUS_MODE": mode}
        (server,) = start_instances(env, count=1, processes=processes)
        try:
            rate, latencies = asyncio.run(drive(server.ws_url, args.pairs, args.seconds,
                                                args.warmup))
        finally:
            stop_all([server])
    return (f"| {label:<22} | {rate:>9.0f} | {1000 * percentile(latencies, 0.5):>8.1f} | "
            f"{1000 * percentile(latencies, 0.99):>8.1f} |")


def fake_delivery(i: int) -> Delivery:
    return Delivery(kind=MESSAGE, conversation_id=f"c_bench{i % 100}",
                    user_ids=(f"nobody-a{i}", f"nobody-b{i}"),
                    frame='{"type":"new_message","data":{"content":"' + "x" * 100 + '"}}',
                    exclude_connection="conn_x", seq=i + 1)


def _publish_irrelevant(url: str, count: int) -> None:
    """In a child process, so its CPU is not counted: publish ``count`` deliveries."""
    client = redis.Redis.from_url(url)
    payloads = [encode(origin_of("other-worker"), fake_delivery(i)) for i in range(count)]
    for start in range(0, count, 500):
        pipe = client.pipeline(transaction=False)
        for payload in payloads[start:start + 500]:
            pipe.publish(CHANNEL_PREFIX + "bench", payload)
        pipe.execute()
    client.close()


async def pattern_cost(url: str, count: int) -> float:
    """CPU µs per irrelevant message for a pattern-mode worker (this process)."""
    received = 0
    done = asyncio.Event()

    def deliver(delivery: Delivery) -> None:
        nonlocal received
        received += 1  # the dispatcher would look up an empty registry here
        if received == count:
            done.set()

    bus = RedisBus(url, f"bench-{uuid.uuid4().hex[:6]}", Metrics())
    await bus.start(deliver)
    cpu_before = time.process_time()
    publisher = multiprocessing.get_context("spawn").Process(
        target=_publish_irrelevant, args=(url, count))
    publisher.start()
    await asyncio.wait_for(done.wait(), 60)
    cpu = time.process_time() - cpu_before
    publisher.join()
    await bus.stop()
    return 1e6 * cpu / count


def redis_publish_rates(url: str, count: int) -> tuple[float, float]:
    client = redis.Redis.from_url(url)
    payload = encode(origin_of("w"), fake_delivery(0))
    users = [f"bench-user-{i}" for i in range(2)]
    for i, user in enumerate(users):  # each recipient connected on its own worker
        client.zadd(slot_key(user), {slot_member(f"bench-worker-{i}", "conn"): 2 ** 50})
    routed = client.register_script(ROUTED_PUBLISH)
    rates = []
    for publish in (lambda p: p.publish("chat:bench", payload),
                    lambda p: routed(keys=[slot_key(u) for u in users],
                                     args=["chat-worker:", payload, "w"], client=p)):
        started = time.perf_counter()
        for _ in range(count // 500):
            pipe = client.pipeline(transaction=False)
            for _ in range(500):
                publish(pipe)
            pipe.execute()
        rates.append(count / (time.perf_counter() - started))
    client.delete(*(slot_key(user) for user in users))
    client.close()
    return rates[0], rates[1]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bus_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--pairs", type=int, default=40, help="sender/receiver pairs")
    parser.add_argument("--redis", default=REDIS_TEST_URL)
    args = parser.parse_args()

    print(f"{args.pairs} pairs, one message in flight per sender, {args.seconds:.0f} s "
          "measured per row, PostgreSQL + Redis, load generator on the same host\n")
    print("| server                 | deliv/s   | p50 ms   | p99 ms   |")
    print("|------------------------|-----------|----------|----------|")
    for label, processes, mode in (("1 worker", 1, "pattern"), ("2 workers, pattern", 2,
                                   "pattern"), ("2 workers, routed", 2, "routed")):
        print(server_row(label, processes, mode, args), flush=True)

    count = 20000
    costs = [asyncio.run(pattern_cost(args.redis, count)) for _ in range(3)]
    print(f"\npattern subscription: {statistics.median(costs):.1f} CPU µs per message a "
          f"worker has no receiver for (median of 3 runs of {count})")
    plain, routed = redis_publish_rates(args.redis, 20000)
    print(f"Redis publishes/s from one pipelined client: PUBLISH {plain:,.0f}, "
          f"routed Lua (2 recipients on 2 workers) {routed:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
