"""The outbox without a broker: retention, backlog, one relay per SQLite file, settings."""

from __future__ import annotations

from datetime import timedelta

import peewee as pw
import psycopg2
import pytest

from harness.services import fresh_postgres_database
from tornchat.config import load_settings
from tornchat.contract.timefmt import utc_now_ms
from tornchat.events.outbox import OutboxRow, OutboxStore, SingleRelayLock
from tornchat.events.relay import build_relay
from tornchat.storage.database import open_database
from tornchat.storage.schema import migrate
from tornchat.storage.store import ChatStore, NewMessage


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


@pytest.mark.postgres
def test_a_claim_locks_only_the_conversations_it_needs_so_parallel_relays_share():
    """While relay A publishes its batch (its conversations locked), relay B
    still finds other conversations to claim, and none of A's."""
    with fresh_postgres_database() as url:
        migrate(open_database(url, 1))
        store = ChatStore(open_database(url, 2))
        for n in range(30):
            conversation = store.find_or_create_conversation(frozenset({f"u{n}", f"v{n}"}))
            store.store_batch([NewMessage(f"u{n}", conversation, tuple(sorted((f"u{n}", f"v{n}"))),
                                          f"m{k}") for k in range(10)])
        relay_a = OutboxStore(open_database(url, 2))
        relay_b = OutboxStore(open_database(url, 2))
        claimed: dict[str, list[OutboxRow]] = {}

        def publish_b(rows):
            claimed["b"] = list(rows)
            return {row.id for row in rows}

        def publish_a(rows):
            claimed["a"] = list(rows)
            relay_b.relay_batch(50, publish_b)  # runs while A holds its locks
            return {row.id for row in rows}

        assert relay_a.relay_batch(50, publish_a) == (50, 50)
        conversations_a = {row.conversation_id for row in claimed["a"]}
        conversations_b = {row.conversation_id for row in claimed["b"]}
        assert len(claimed["b"]) == 50
        assert not conversations_a & conversations_b
        assert relay_a.backlog().size == 300 - 100
        for closing in (relay_a, relay_b, store):
            closing.close()


def _publish_and_lose_the_mark(relay: OutboxStore, url: str, limit: int) -> list[int]:
    """One relay round whose rows the "broker" acknowledges, after which the
    relay's own database connection is killed before its mark commits."""
    published: list[int] = []

    def publish_then_lose_the_connection(rows):
        published.extend(row.id for row in rows)
        pid = relay.database.connection().get_backend_pid()
        with psycopg2.connect(url) as admin, admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
        return {row.id for row in rows}

    with pytest.raises((pw.OperationalError, pw.InterfaceError)):
        relay.relay_batch(limit, publish_then_lose_the_connection)
    return published


@pytest.mark.postgres
def test_a_batch_kafka_acknowledged_is_not_sent_again_when_its_mark_is_lost():
    """The database connection dies after the broker acknowledged a batch but
    before the relay's mark committed (a PostgreSQL restart): the next round
    records that batch as sent instead of publishing it a second time."""
    with fresh_postgres_database() as url:
        store = _store_with_messages(url, 30)
        relay = OutboxStore(open_database(url, 1))
        published = _publish_and_lose_the_mark(relay, url, 10)
        assert relay.backlog().size == 30  # the mark never committed

        def publish(rows):
            published.extend(row.id for row in rows)
            return {row.id for row in rows}

        assert relay.relay_batch(50, publish) == (20, 20)
        assert len(published) == len(set(published)) == 30
        assert relay.backlog().size == 0
        relay.close()
        store.close()


@pytest.mark.postgres
def test_a_relay_stopping_after_a_lost_mark_records_it_on_the_way_out():
    with fresh_postgres_database() as url:
        store = _store_with_messages(url, 5)
        relay = OutboxStore(open_database(url, 1))
        _publish_and_lose_the_mark(relay, url, 10)
        relay.flush_unrecorded()  # what the relay thread does when it stops
        assert relay.backlog().size == 0
        relay.close()
        store.close()
