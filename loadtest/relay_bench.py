"""Measure the relay: backlog throughput and what it adds to a send.

    .venv/bin/python -m loadtest.relay_bench [--events 20000] [--sends 400]

Starts its own Tansu broker and uses the local PostgreSQL
(``TORNCHAT_TEST_POSTGRES``). Prints: events/s draining a backlog (SQLite and
PostgreSQL, one and two relays), send→message_sent latency with and without a
relay, and commit→consumer latency of events.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import json
import statistics
import tempfile
import time

from confluent_kafka import Consumer, TopicPartition

from harness.kafka import PARTITIONS, TOPIC, running_tansu
from harness.server import TEST_SECRET, ServerProcess
from harness.services import fresh_postgres_database
from harness.wsclient import authed
from tornchat.events.kafka import EventPublisher
from tornchat.events.outbox import OutboxStore
from tornchat.events.relay import OutboxRelay
from tornchat.storage.database import open_database
from tornchat.storage.schema import migrate
from tornchat.storage.store import ChatStore, NewMessage


def fill(url: str, events: int, conversations: int = 100) -> None:
    migrate(open_database(url, 1))
    store = ChatStore(open_database(url, 2))
    convs = [(store.find_or_create_conversation(frozenset({f"a{n}", f"b{n}"})),
              (f"a{n}", f"b{n}")) for n in range(conversations)]
    batch = [NewMessage(users[0], conv, users, "x" * 100)
             for conv, users in (convs[n % conversations] for n in range(events))]
    for start in range(0, len(batch), 200):
        store.store_batch(batch[start:start + 200])
    store.close()


async def drain_rate(url: str, broker: str, relays: int, events: int) -> float:
    workers = [OutboxRelay(OutboxStore(open_database(url, 2)),
                           EventPublisher(broker, TOPIC, 10.0)) for _ in range(relays)]
    started = time.perf_counter()
    for relay in workers:
        await relay.start()
    while sum(relay.published for relay in workers) < events:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    for relay in workers:
        await relay.stop(2)
    return events / elapsed


async def send_latency(env: dict[str, str], sends: int, tmp: str) -> list[float]:
    server = ServerProcess(cwd=tmp, env={"TORNCHAT_RATE_LIMIT_PER_SECOND": "10000",
                                         "TORNCHAT_RATE_LIMIT_BURST": "10000", **env}).start()
    try:
        alice = await authed(server.ws_url, TEST_SECRET, "alice")
        first = await alice.request({"type": "send_message", "recipientIds": ["bob"],
                                     "content": "hi"})
        conversation = first["data"]["conversationId"]
        latencies = []
        for n in range(sends):
            started = time.perf_counter()
            reply = await alice.request({"type": "send_message", "conversationId": conversation,
                                         "content": f"m{n}"})
            latencies.append(time.perf_counter() - started)
            assert reply["type"] == "message_sent"
            await asyncio.sleep(0.005)
        alice.close()
        return latencies
    finally:
        server.stop()


def event_lag(broker: str, count: int) -> list[float]:
    """Record timestamp (set when the relay produced it) minus the event's createdAt."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": "bench"})
    consumer.assign([TopicPartition(TOPIC, p, -2) for p in range(PARTITIONS)])
    lags = []
    try:
        while len(lags) < count:
            message = consumer.poll(5)
            if message is None:
                break
            if message.error():
                continue
            created = json.loads(message.value())["timestamp"]
            created_s = (calendar.timegm(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S"))
                         + int(created[20:23]) / 1000)
            lags.append(message.timestamp()[1] / 1000 - created_s)
    finally:
        consumer.close()
    return lags


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return (f"median {statistics.median(ordered) * 1000:.2f} ms, "
            f"p99 {p99 * 1000:.2f} ms (n={len(ordered)})")


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.relay_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--sends", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for relays in (1, 2):
            with running_tansu(tmp) as tansu, fresh_postgres_database(for_test=False) as url:
                fill(url, args.events)
                rate = await drain_rate(url, tansu.bootstrap, relays, args.events)
                print(f"PostgreSQL, {relays} relay(s): {rate:,.0f} events/s")
        with running_tansu(tmp) as tansu:
            url = f"sqlite:///{tmp}/bench.db"
            fill(url, args.events)
            rate = await drain_rate(url, tansu.bootstrap, 1, args.events)
            print(f"SQLite, 1 relay: {rate:,.0f} events/s")
        with running_tansu(tmp) as tansu, fresh_postgres_database(for_test=False) as url:
            migrate(open_database(url, 1))
            with_relay = await send_latency({"DATABASE_URL": url,
                                             "KAFKA_BROKER": tansu.bootstrap}, args.sends, tmp)
            lag = event_lag(tansu.bootstrap, args.sends + 1)
            without = await send_latency({"DATABASE_URL": url}, args.sends, tmp)
            print(f"send→message_sent, PostgreSQL, no relay:  {summary(without)}")
            print(f"send→message_sent, PostgreSQL, relay on: {summary(with_relay)}")
            print(f"commit→produce timestamp (event lag):    {summary(lag)}")


if __name__ == "__main__":
    asyncio.run(main())
