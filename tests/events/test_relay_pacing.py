"""A caught-up relay gathers events into few rounds; a backlog drains without pauses."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from tornchat.events.kafka import EventPublisher
from tornchat.events.outbox import OutboxStore, Publish
from tornchat.events.relay import OutboxRelay
from tornchat.storage.database import open_database
from tornchat.storage.schema import migrate
from tornchat.storage.store import ChatStore

pytestmark = pytest.mark.kafka


class CountingOutbox(OutboxStore):
    """The real outbox, counting the relay rounds that carried rows."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.rounds: list[int] = []

    def relay_batch(self, limit: int, publish: Publish) -> tuple[int, int]:
        claimed, acked = super().relay_batch(limit, publish)
        if claimed:
            self.rounds.append(claimed)
        return claimed, acked


def _store(url: str) -> tuple[ChatStore, str]:
    migrate(open_database(url, 1))
    store = ChatStore(open_database(url, 1))
    return store, store.find_or_create_conversation(frozenset({"a", "b"}))


def _trickle(store: ChatStore, conversation: str, count: int, gap: float) -> None:
    for n in range(count):
        store.store_message("a", conversation, ("a", "b"), f"m{n}")
        time.sleep(gap)


async def _published(relay: OutboxRelay, total: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while relay.published < total:
        assert time.monotonic() < deadline, f"only {relay.published}/{total} published"
        await asyncio.sleep(0.02)


async def test_a_trickle_of_events_goes_out_in_few_rounds(kafka_broker, tmp_path):
    url = f"sqlite:///{tmp_path}/chat.db"
    store, conversation = _store(url)
    outbox = CountingOutbox(open_database(url, 1))
    relay = OutboxRelay(outbox, EventPublisher(kafka_broker.bootstrap, "chat-events", 5.0),
                        batch_size=200, poll_interval=0.25)
    await relay.start()
    writer = threading.Thread(target=_trickle, args=(store, conversation, 100, 0.01))
    trickle_started = time.monotonic()
    writer.start()
    await asyncio.get_running_loop().run_in_executor(None, writer.join)
    trickled = time.monotonic() - trickle_started
    await _published(relay, 100)
    await relay.stop(2.0)
    store.close()
    # about one round per 0.25 s of trickling (each store commits, so a busy
    # disk stretches it); spinning would take about 100 rounds
    assert sum(outbox.rounds) == 100
    assert len(outbox.rounds) <= trickled / 0.25 + 3, (trickled, outbox.rounds)
    assert len(outbox.rounds) <= 40, outbox.rounds


async def test_a_backlog_drains_in_full_batches_without_waiting(kafka_broker, tmp_path):
    url = f"sqlite:///{tmp_path}/chat.db"
    store, conversation = _store(url)
    for n in range(500):
        store.store_message("a", conversation, ("a", "b"), f"m{n}")
    outbox = CountingOutbox(open_database(url, 1))
    relay = OutboxRelay(outbox, EventPublisher(kafka_broker.bootstrap, "chat-events", 5.0),
                        batch_size=100, poll_interval=5.0)
    started = time.monotonic()
    await relay.start()
    await _published(relay, 500)
    elapsed = time.monotonic() - started
    await relay.stop(2.0)
    store.close()
    assert outbox.rounds == [100] * 5
    assert elapsed < 5.0  # never waited a poll interval between full batches
