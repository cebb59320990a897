"""The store's side of version 2: read positions inside the send transaction,
history ranges, and indexes that serve every read (no table scan)."""

from __future__ import annotations

import pytest

from harness.services import fresh_postgres_database, migrated
from tornchat.storage.database import open_database
from tornchat.storage.reads import ConversationReads, history_range
from tornchat.storage.readstate import ReadPositions
from tornchat.storage.store import ChatStore, NewMessage


@pytest.fixture
def store(database_url):
    store = ChatStore(open_database(migrated(database_url), 2))
    yield store
    store.close()


def _positions(store: ChatStore, conversation_id: str) -> dict[str, int]:
    rows = store.database.execute_sql(
        f"SELECT user_id, last_read_seq FROM participant WHERE conversation_id = "
        f"{store.database.param}", (conversation_id,)).fetchall()
    return dict(rows)


def test_a_batch_moves_each_sender_to_its_newest_message_in_the_same_transaction(store):
    conversation = store.find_or_create_conversation(frozenset({"a", "b", "c"}))
    members = ("a", "b", "c")
    store.store_batch([NewMessage("a", conversation, members, "1"),
                       NewMessage("b", conversation, members, "2"),
                       NewMessage("a", conversation, members, "3")])
    assert _positions(store, conversation) == {"a": 3, "b": 2, "c": 0}
    ReadPositions(store).mark_read("c", conversation, 3)
    store.store_batch([NewMessage("b", conversation, members, "4")])
    assert _positions(store, conversation) == {"a": 3, "b": 4, "c": 3}


def test_a_repeated_client_message_id_does_not_move_anything_back(store):
    conversation = store.find_or_create_conversation(frozenset({"a", "b"}))
    store.store_batch([NewMessage("a", conversation, ("a", "b"), "1", "k1"),
                       NewMessage("a", conversation, ("a", "b"), "2")])
    retried = store.store_batch([NewMessage("a", conversation, ("a", "b"), "1", "k1")])
    assert retried[0].duplicate and retried[0].seq == 1
    assert _positions(store, conversation)["a"] == 2


def test_mark_read_moves_forward_only_and_reports_whether_it_moved(store):
    conversation = store.find_or_create_conversation(frozenset({"a", "b"}))
    for content in "123":
        store.store_message("a", conversation, ("a", "b"), content)
    positions = ReadPositions(store)
    first = positions.mark_read("b", conversation, 2)
    assert (first.last_read_seq, first.unread_count, first.moved) == (2, 1, True)
    again = positions.mark_read("b", conversation, 1)
    assert (again.last_read_seq, again.moved, again.read_at) == (2, False, first.read_at)
    clamped = positions.mark_read("b", conversation, 100)
    assert (clamped.last_read_seq, clamped.unread_count, clamped.moved) == (3, 0, True)
    events = store.database.execute_sql(
        f"SELECT payload FROM outbox WHERE payload LIKE {store.database.param}",
        ("%ConversationRead%",)).fetchall()
    assert len(events) == 2  # one per stored move


@pytest.mark.parametrize(("last", "limit", "before", "after", "expected"), [
    (12, 5, None, None, (8, 12)),
    (3, 5, None, None, (1, 3)),
    (0, 5, None, None, (1, 0)),
    (12, 5, 8, None, (3, 7)),
    (12, 5, 20, None, (8, 12)),
    (12, 5, None, 2, (3, 7)),
    (12, 5, None, 10, (11, 12)),
    (12, 5, 6, 3, (4, 5)),
    (12, 2, 9, 3, (4, 5)),
])
def test_history_ranges(last, limit, before, after, expected):
    assert history_range(last, limit, before, after) == expected


@pytest.mark.postgres
def test_every_read_query_is_served_by_an_index_on_postgresql():
    """With sequential scans priced out, each query's plan still reads only
    through indexes: the list, one conversation, history and a sync."""
    with fresh_postgres_database() as url:
        store = ChatStore(open_database(migrated(url), 2))
        try:
            conversation = store.find_or_create_conversation(frozenset({"a", "b"}))
            store.store_message("a", conversation, ("a", "b"), "hi")
            with store.session():
                [(name,)] = store.database.execute_sql("SELECT current_database()").fetchall()
                store.database.execute_sql(f'ALTER DATABASE "{name}" SET enable_seqscan = off')
            store.database.close_all()  # pooled connections pick the setting up anew
            reads = ConversationReads(store)
            plans: list[str] = []
            execute_sql = store.database.execute_sql

            def explain(sql, params=None, *args, **kwargs):
                if sql.startswith("SELECT") and ("FROM message" in sql
                                                 or "FROM participant AS p" in sql):
                    plans.append("\n".join(row[0] for row in execute_sql(
                        "EXPLAIN " + sql, params).fetchall()))
                return execute_sql(sql, params, *args, **kwargs)

            store.database.execute_sql = explain
            reads.conversations("a", 20, None)
            reads.messages("a", conversation, 50, None, None)
            reads.sync_windows("a", [(conversation, 0)], 100)
            store.database.execute_sql = execute_sql
            assert len(plans) >= 3
            for plan in plans:
                assert "Seq Scan" not in plan, plan
        finally:
            store.close()


def test_the_read_position_migration_starts_each_participant_at_its_own_newest_message(
        database_url):
    """An upgrade does not show users their own messages as unread."""
    from playhouse.migrations import Runner

    from tornchat.storage.schema import MIGRATIONS_DIR

    database = open_database(database_url, 1)
    with database.connection_context():
        Runner(database, directory=MIGRATIONS_DIR).up(target="0002_outbox_pending_index")
        p = database.param
        database.execute_sql("INSERT INTO conversation (id, participant_key, created_at, "
                             f"updated_at, last_message_at, last_seq) VALUES ({p}, {p}, "
                             "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 3)",
                             ("c_old", "k"))
        for user in ("a", "b", "c"):
            database.execute_sql("INSERT INTO participant (id, user_id, conversation_id, "
                                 f"joined_at, last_read_at) VALUES ({p}, {p}, {p}, "
                                 "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
                                 (f"p_{user}", user, "c_old"))
        for seq, sender in ((1, "a"), (2, "b"), (3, "a")):
            database.execute_sql("INSERT INTO message (id, conversation_id, sender_id, content, "
                                 f"created_at, seq) VALUES ({p}, {p}, {p}, {p}, "
                                 f"CURRENT_TIMESTAMP, {p})",
                                 (f"m_{seq}", "c_old", sender, "x", seq))
        Runner(database, directory=MIGRATIONS_DIR).up()
        rows = database.execute_sql(
            "SELECT user_id, last_read_seq FROM participant ORDER BY user_id").fetchall()
    database.close()
    assert dict(rows) == {"a": 3, "b": 2, "c": 0}
