"""The repository on SQLite and on the real PostgreSQL (a fresh database each)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import peewee as pw
import pytest

from harness.services import migrated
from tornchat.errors import Forbidden, NotFound, Unavailable
from tornchat.storage.database import open_database
from tornchat.storage.store import ChatStore, NewMessage
from tornchat.storage.writer import GroupCommitWriter


@pytest.fixture
def store(database_url: str):
    store = ChatStore(open_database(migrated(database_url), 8))
    yield store
    store.close()


def test_concurrent_first_messages_to_one_set_end_in_one_conversation(store):
    users = frozenset({"alice", "bob", "carol"})
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: store.find_or_create_conversation(users), range(16)))
    assert len(ids) == 1
    assert store.participants_of(ids.pop()) == ("alice", "bob", "carol")


def test_seq_is_gap_free_under_concurrent_writers(store):
    users = ("alice", "bob")
    conversation = store.find_or_create_conversation(frozenset(users))

    def send(i: int) -> int:
        return store.store_message(users[i % 2], conversation, users, f"m{i}").seq

    with ThreadPoolExecutor(8) as pool:
        seqs = sorted(pool.map(send, range(60)))
    assert seqs == list(range(1, 61))
    assert [m.seq for m in store.messages_of(conversation)] == list(range(1, 61))


def test_client_message_id_is_idempotent_even_when_retries_race(store):
    users = ("alice", "bob")
    conversation = store.find_or_create_conversation(frozenset(users))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(
            lambda _: store.store_message("alice", conversation, users, "hi", "cm-1"), range(8)))
    assert len({r.id for r in results}) == 1
    assert len(store.messages_of(conversation)) == 1
    # another sender may reuse the same client id: it is scoped per sender
    other = store.store_message("bob", conversation, users, "hi", "cm-1")
    assert other.id != results[0].id


def test_message_and_its_outbox_event_are_written_together(store):
    users = ("alice", "bob", "carol")
    conversation = store.find_or_create_conversation(frozenset(users))
    message = store.store_message("alice", conversation, users, "Hello")
    Outbox = store.models.Outbox
    with store.database.connection_context():
        rows = list(Outbox.select().where(Outbox.message_id == message.id))
    assert len(rows) == 1
    event = json.loads(rows[0].payload)
    assert event == {
        "eventType": "MessageSent", "messageId": message.id,
        "conversationId": conversation, "senderId": "alice",
        "recipientIds": ["bob", "carol"], "content": "Hello",
        "timestamp": message.to_wire()["createdAt"], "dedupeId": rows[0].dedupe_id,
        "source": "chat-service", "version": 1,
    }
    assert rows[0].sent_at is None


def test_membership_is_checked_and_unknown_conversations_are_not_found(store):
    conversation = store.find_or_create_conversation(frozenset({"alice", "bob"}))
    assert store.member_participants(conversation, "bob") == ("alice", "bob")
    with pytest.raises(Forbidden):
        store.member_participants(conversation, "mallory")
    with pytest.raises(NotFound):
        store.participants_of("c_does_not_exist")


def test_content_round_trips_exactly_whatever_it_holds(store):
    """Quotes, backslashes, escapes, control characters and non-ASCII reach
    the database as sent (on PostgreSQL the batch travels as one JSON
    parameter), with or without a clientMessageId."""
    conversation = store.find_or_create_conversation(frozenset({"a", "b"}))
    contents = ['say "hi"', "back\\slash \\u0041 \\n", "tab\tnew\nline\r\x07",
                "héllo wörld ✓ 😀 \u2028\ufeff", "{\"json\": [1, 2]}", ""]
    results = store.store_batch([
        NewMessage("a", conversation, ("a", "b"), content, f"k{index}" if index % 2 else None)
        for index, content in enumerate(contents)])
    assert [message.content for message in results] == contents
    stored = store.messages_of(conversation)
    assert [message.content for message in stored] == contents
    assert [message.client_message_id for message in stored] == [
        None, "k1", None, "k3", None, "k5"]


def test_timestamps_round_trip_with_millisecond_precision(store):
    users = ("alice", "bob")
    conversation = store.find_or_create_conversation(frozenset(users))
    stored = store.store_message("alice", conversation, users, "hi")
    [loaded] = store.messages_of(conversation)
    assert loaded.to_wire() == stored.to_wire()


def test_a_batch_commits_in_order_and_isolates_per_request_errors(store):
    users = ("alice", "bob")
    one = store.find_or_create_conversation(frozenset(users))
    two = store.find_or_create_conversation(frozenset({"alice", "carol"}))
    results = store.store_batch([
        NewMessage("alice", one, users, "a1", "k1"),
        NewMessage("alice", two, ("alice", "carol"), "b1"),
        NewMessage("alice", "c_missing", users, "lost"),
        NewMessage("bob", one, users, "a2"),
        NewMessage("alice", one, users, "a1 again", "k1"),
    ])
    assert [getattr(r, "seq", None) for r in results] == [1, 1, None, 2, 1]
    assert isinstance(results[2], NotFound)
    assert results[4].id == results[0].id and results[4].duplicate
    assert [m.content for m in store.messages_of(one)] == ["a1", "a2"]


@contextlib.contextmanager
def running_writer(store: ChatStore, threads: int = 1) -> Iterator[GroupCommitWriter]:
    """A started group-commit writer over ``store``, stopped on the way out."""
    writer = GroupCommitWriter(store, threads=store.dialect.writer_threads(threads))
    writer.start()
    try:
        yield writer
    finally:
        writer.stop()


async def test_the_group_commit_writer_batches_concurrent_sends(store):
    users = ("alice", "bob")
    conversation = store.find_or_create_conversation(frozenset(users))
    with running_writer(store) as writer:
        stored = await asyncio.gather(*(
            writer.store(NewMessage("alice", conversation, users, f"m{i}")) for i in range(200)))
    assert sorted(m.seq for m in stored) == list(range(1, 201))
    assert [m.content for m in store.messages_of(conversation)] == [f"m{i}" for i in range(200)]


async def test_with_several_writer_threads_each_conversation_keeps_its_send_order(store):
    """Four threads commit side by side (PostgreSQL; SQLite keeps one), yet
    within a conversation seq follows the order the messages were submitted,
    and every committed batch reaches the hook once."""
    conversations = [store.find_or_create_conversation(frozenset({f"u{i}", "hub"}))
                     for i in range(8)]
    hooked: list[str] = []
    with running_writer(store, threads=4) as writer:
        writer.on_committed(lambda batch: hooked.extend(m.id for m in batch))
        stored = await asyncio.gather(*(
            writer.store(NewMessage("hub", conversations[i % 8],
                                    tuple(sorted((f"u{i % 8}", "hub"))), f"m{i}"))
            for i in range(400)))
    for n, conversation in enumerate(conversations):
        contents = [m.content for m in store.messages_of(conversation)]
        assert contents == [f"m{i}" for i in range(n, 400, 8)]
    assert sorted(hooked) == sorted(m.id for m in stored)


async def test_one_unstorable_message_does_not_fail_its_batch_neighbours(store):
    users = ("alice", "bob")
    conversation = store.find_or_create_conversation(frozenset(users))
    with running_writer(store) as writer:
        results = await asyncio.gather(
            writer.store(NewMessage("alice", conversation, users, "good 1")),
            writer.store(NewMessage("alice", conversation, users, "bad \ud800")),
            writer.store(NewMessage("alice", conversation, users, "good 2")),
            return_exceptions=True)
    assert isinstance(results[1], Exception)
    assert [r.content for r in (results[0], results[2])] == ["good 1", "good 2"]
    assert [m.seq for m in store.messages_of(conversation)] == [1, 2]
    assert writer.alive is False


def test_concurrent_batches_over_the_same_conversations_neither_deadlock_nor_gap(
        database_url):
    """Two stores (two workers) write batches that touch the same conversations
    in opposite orders; seq stays gap-free and no batch fails."""
    import threading

    stores = [ChatStore(open_database(migrated(database_url), 2)) for _ in range(2)]
    conversations = [stores[0].find_or_create_conversation(frozenset({f"u{i}", "hub"}))
                     for i in range(6)]
    errors: list[BaseException] = []

    def write(store: ChatStore, order: list[str]) -> None:
        try:
            for _ in range(15):
                batch = [NewMessage("hub", cid, tuple(sorted({"hub", f"u{i}"})), "x")
                         for cid in order for i in [conversations.index(cid)]]
                for result in store.store_batch(batch):
                    assert not isinstance(result, Exception), result
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(stores[0], conversations)),
               threading.Thread(target=write, args=(stores[1], conversations[::-1]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for cid in conversations:
        assert [m.seq for m in stores[0].messages_of(cid)] == list(range(1, 31))
    for store in stores:
        store.close()


@pytest.mark.postgres
def test_a_postgresql_batch_is_one_prepared_statement_and_leaves_no_transaction_open():
    """A batch is one round trip (prepared on first use, and again on a
    connection that lacks it); a repeated clientMessageId costs one redo that
    looks the original up; a failing batch leaves the connection usable."""
    import psycopg2

    from harness.services import fresh_postgres_database
    with fresh_postgres_database() as url:
        store = ChatStore(open_database(migrated(url), 2))
        first = store.find_or_create_conversation(frozenset({"a", "b"}))
        second = store.find_or_create_conversation(frozenset({"a", "c"}))
        sent: list[str] = []
        execute_sql = store.database.execute_sql

        def counting(sql, params=None, *args, **kwargs):
            sent.append(sql.split(" ", 1)[0])
            return execute_sql(sql, params, *args, **kwargs)

        store.database.execute_sql = counting
        batch = [NewMessage("a", first, ("a", "b"), "x", "c1"),
                 NewMessage("a", second, ("a", "c"), "y", "c2")]
        assert [m.seq for m in store.store_batch(batch)] == [1, 1]
        assert sent == ["EXECUTE", "PREPARE", "EXECUTE"]  # a new connection: prepared once
        sent.clear()
        assert [m.seq for m in store.store_batch([NewMessage("a", second, ("a", "c"), "v")])
                ] == [2]
        assert sent == ["EXECUTE"]
        sent.clear()
        retried = store.store_batch([NewMessage("a", first, ("a", "b"), "x", "c1"),
                                     NewMessage("a", first, ("a", "b"), "z", "c3")])
        assert [(m.seq, m.duplicate) for m in retried] == [(1, True), (2, False)]
        # refused by the index, then redone in one transaction that looks the
        # original up, locks the counters and writes with the COMMIT
        assert sent == ["EXECUTE", "BEGIN;", "SELECT", "UPDATE"]
        sent.clear()
        # a failing batch is rolled back: the connection is usable at once
        with pytest.raises(pw.DataError):  # PostgreSQL's text refuses NUL
            store.store_batch([NewMessage("a", first, ("a", "b"), "bad\x00")])
        assert [m.seq for m in store.store_batch([NewMessage("a", first, ("a", "b"), "w")])] == [3]
        # a connection lost to an outage is replaced, and the new one prepares again
        [(pid,)] = execute_sql("SELECT pg_backend_pid()").fetchall()
        with contextlib.closing(psycopg2.connect(url)) as admin, admin.cursor() as cur:
            admin.autocommit = True
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(Unavailable):
            store.store_batch([NewMessage("a", first, ("a", "b"), "lost")])
        sent.clear()
        assert [m.seq for m in store.store_batch([NewMessage("a", first, ("a", "b"), "u")])] == [4]
        assert sent == ["EXECUTE", "PREPARE", "EXECUTE"]
        store.database.execute_sql = execute_sql
        assert [m.content for m in store.messages_of(first)] == ["x", "z", "w", "u"]
        assert [m.seq for m in store.messages_of(second)] == [1, 2]
        store.close()
