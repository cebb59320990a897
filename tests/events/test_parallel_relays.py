"""Two relays on one PostgreSQL outbox: every event published once, in order."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

import pytest

from harness.services import fresh_postgres_database
from tests.events.conftest import consume, outbox_rows
from tornchat.events.kafka import EventPublisher
from tornchat.events.outbox import OutboxStore
from tornchat.events.relay import OutboxRelay
from tornchat.storage.database import open_database
from tornchat.storage.schema import migrate
from tornchat.storage.store import ChatStore, NewMessage

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

CONVERSATIONS = 30
BEFORE, DURING = 1500, 600


def _write(store: ChatStore, conversations: list[tuple[str, tuple[str, ...]]], count: int,
           offset: int, batch: int = 10) -> None:
    """``count`` messages round-robin over the conversations, a few per transaction."""
    messages = []
    for n in range(offset, offset + count):
        conversation, users = conversations[n % len(conversations)]
        messages.append(NewMessage(users[0], conversation, users, f"m{n}"))
    for start in range(0, len(messages), batch):
        store.store_batch(messages[start:start + batch])


async def test_two_relays_in_parallel_publish_each_event_once_in_order(kafka_broker):
    with fresh_postgres_database() as url:
        migrate(open_database(url, 1))
        store = ChatStore(open_database(url, 4))
        conversations = []
        for n in range(CONVERSATIONS):
            users = (f"u{n}", f"v{n}")
            conversations.append((store.find_or_create_conversation(frozenset(users)),
                                  tuple(sorted(users))))
        relays = [OutboxRelay(OutboxStore(open_database(url, 2)),
                              EventPublisher(kafka_broker.bootstrap, "chat-events", 5.0),
                              batch_size=50, poll_interval=0.02)
                  for _ in range(2)]
        writer = threading.Thread(target=_write, args=(store, conversations, DURING, BEFORE))
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(relay.start() for relay in relays))
        deadline = loop.time() + 15
        while [await relay.health() for relay in relays] != ["ok", "ok"]:
            assert loop.time() < deadline, "both relays should reach the broker"
            await asyncio.sleep(0.05)
        # the backlog appears while both relays are polling, so both take part
        await loop.run_in_executor(None, _write, store, conversations, BEFORE, 0)
        writer.start()
        await loop.run_in_executor(None, writer.join)
        deadline = loop.time() + 30
        while await loop.run_in_executor(None, lambda: relays[0].outbox.backlog().size):
            assert loop.time() < deadline, "the outbox did not drain"
            await asyncio.sleep(0.05)
        for relay in relays:
            await relay.stop(2.0)
        rows = outbox_rows(url)
        seq_of = {message.id: message.seq for conversation, _ in conversations
                  for message in store.messages_of(conversation)}
        store.close()

    total = BEFORE + DURING
    published = [relay.published for relay in relays]
    assert sum(published) == total
    assert min(published) > 0, f"both relays should have worked: {published}"
    assert len(rows) == total and all(row["sent_at"] is not None for row in rows)
    assert all(row["attempts"] == 1 for row in rows)

    records = consume(kafka_broker.bootstrap, total, timeout=30)
    dedupe_ids = [record.event["dedupeId"] for record in records]
    assert len(dedupe_ids) == total
    assert len(set(dedupe_ids)) == total, "an event was published twice"
    seqs: dict[str, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        seqs[record.key].append(seq_of[record.event["messageId"]])
    for conversation, order in seqs.items():
        assert order == sorted(order), f"{conversation} out of order"
    assert len(seqs) == CONVERSATIONS
