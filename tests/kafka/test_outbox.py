"""The outbox without a broker: retention, backlog, one relay per SQLite file, settings."""

from __future__ import annotations

from datetime import timedelta

from tornchat.config import load_settings
from tornchat.database import open_database
from tornchat.outbox import OutboxStore, SingleRelayLock
from tornchat.relay import build_relay
from tornchat.schema import migrate
from tornchat.store import ChatStore
from tornchat.timefmt import utc_now_ms


def _store_with_messages(url: str, count: int) -> ChatStore:
    migrate(open_database(url, 1))
    store = ChatStore(open_database(url, 1))
    conversation = store.find_or_create_conversation(frozenset({"a", "b"}))
    for n in range(count):
        store.store_message("a", conversation, ("a", "b"), f"m{n}")
    return store


def test_prune_removes_only_rows_sent_before_the_retention(tmp_path):
    url = f"sqlite:///{tmp_path}/chat.db"
    store = _store_with_messages(url, 5)
    outbox = OutboxStore(open_database(url, 1))
    Outbox = outbox.Outbox
    ids = [row.id for row in Outbox.select().order_by(Outbox.id)]
    now = utc_now_ms()
    Outbox.update(sent_at=now - timedelta(hours=30)).where(Outbox.id.in_(ids[:2])).execute()
    Outbox.update(sent_at=now - timedelta(hours=1)).where(Outbox.id == ids[2]).execute()

    assert outbox.backlog().size == 2
    assert outbox.prune(timedelta(hours=24)) == 2
    assert [row.id for row in Outbox.select().order_by(Outbox.id)] == ids[2:]
    assert outbox.backlog().size == 2 and outbox.backlog().oldest_age >= 0
    outbox.close()
    store.close()


def test_one_relay_per_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path}/chat.db"
    first = SingleRelayLock(open_database(url, 1))
    second = SingleRelayLock(open_database(url, 1))
    assert first.try_acquire()
    assert not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()


def test_no_relay_without_kafka_broker():
    assert build_relay(load_settings(environ={})) is None
