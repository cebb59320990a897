"""PostgreSQL: a batch in one round trip, concurrent writers kept apart by row locks.

The round trip and the commit's fsync, not SQL work, are what a message
costs. So a batch is one prepared, autocommitted statement
(:data:`_PREPARE_BATCH`): one round trip. Several workers write at once, so
``seq`` stays gap-free through the conversation row lock, taken in id order
(two batches over the same conversations cannot deadlock). A repeated
``clientMessageId`` is rare (a client retrying after a lost
acknowledgement), so the batch does not look for one first: the unique index
objects, and the batch is redone statement by statement with the lookup in a
:class:`_PipelinedTransaction` (two round trips).

Thread rule: blocking; runs off the IOLoop. A thread hands its pooled
connection back after each unit of work (the writer thread keeps its own),
and the store's executor reads with ``pool_size`` threads.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import peewee as pw

from tornchat.contract.ids import new_id
from tornchat.contract.records import StoredMessage
from tornchat.contract.timefmt import to_iso, utc_now_ms
from tornchat.errors import NotFound
from tornchat.storage.dialect import (
    MESSAGE_INSERT,
    OUTBOX_INSERT,
    BatchPlan,
    Dialect,
    Statements,
)

if TYPE_CHECKING:  # annotations only (the store imports this module)
    from tornchat.storage.store import NewMessage, StoreResult

# A batch in one autocommitted statement, prepared once per connection
# (planning it costs more than running it). The new messages travel as one
# JSON array of objects, one per message (encoded by orjson: psycopg2 quoting
# eight arrays element by element cost five times as much client CPU, 129
# against 24 µs for 20 messages); ``rank`` numbers a conversation's messages
# in the batch from 1.
# ``locked`` takes the conversation row locks in id order (two workers'
# batches over the same conversations cannot deadlock); ``bumped`` advances
# each counter (an UPDATE applies to the newest row version, so concurrent
# batches never share a seq); messages are numbered from the old counter, and
# events inserted in seq order, so the outbox follows it. ``senders`` moves
# each sender's read position to its newest message (participant rows are
# written only under their conversation's row lock, and a mark_read locks one
# participant row and nothing else, so neither can wait on the other in a
# cycle).
_BATCH_STATEMENT = "tornchat_store_batch"
_PREPARE_BATCH = (
    f"PREPARE {_BATCH_STATEMENT} "
    "(json, timestamp) AS "
    "WITH v AS (SELECT * FROM json_to_recordset($1) AS v(id text, conversation_id text, "
    "sender_id text, content text, client_message_id text, rank int, dedupe_id text, "
    "payload text)), "
    "n AS (SELECT conversation_id, count(*) AS added FROM v GROUP BY conversation_id), "
    "locked AS MATERIALIZED (SELECT id FROM conversation "
    "WHERE id IN (SELECT conversation_id FROM n) ORDER BY id FOR UPDATE), "
    "bumped AS (UPDATE conversation AS c SET last_seq = c.last_seq + n.added, "
    "last_message_at = $2, updated_at = $2 "
    "FROM n JOIN locked ON locked.id = n.conversation_id WHERE c.id = n.conversation_id "
    "RETURNING c.id, c.last_seq - n.added AS base), "
    f"stored AS ({MESSAGE_INSERT} SELECT v.id, v.conversation_id, v.sender_id, v.content, "
    "$2, b.base + v.rank, v.client_message_id FROM v JOIN bumped AS b "
    "ON b.id = v.conversation_id RETURNING id, seq), "
    f"events AS ({OUTBOX_INSERT} SELECT v.id, v.conversation_id, v.dedupe_id, v.payload, "
    "$2, 0 FROM v JOIN stored AS s ON s.id = v.id ORDER BY v.conversation_id, s.seq), "
    "senders AS (UPDATE participant AS p SET last_read_seq = r.seq, last_read_at = $2 "
    "FROM (SELECT v.conversation_id, v.sender_id, max(s.seq) AS seq FROM v "
    "JOIN stored AS s ON s.id = v.id GROUP BY v.conversation_id, v.sender_id) AS r "
    "WHERE p.conversation_id = r.conversation_id AND p.user_id = r.sender_id "
    "AND p.last_read_seq < r.seq) "
    "SELECT id, seq FROM stored")
_EXECUTE_BATCH = f"EXECUTE {_BATCH_STATEMENT} (%s, %s)"
_UNDEFINED_PREPARED_STATEMENT = "26000"


class PostgresDialect(Dialect):
    keeps_connection = False

    def reader_threads(self, pool_size: int) -> int:
        """As many as the pool has connections for readers."""
        return pool_size

    def writer_threads(self, wanted: int) -> int:
        """As many as asked: batches touching one conversation serialise on its
        row lock (seq order is commit order), the others commit side by side."""
        return wanted

    def write_transaction(self) -> Any:
        return self.database.atomic()

    def lock_rows_of(self, alias: str) -> str:
        return f" FOR UPDATE OF {alias}"

    def insert_batch(self, batch: list[NewMessage]) -> list[StoreResult]:
        """One prepared statement (:data:`_PREPARE_BATCH`); after the unique
        index objected to a repeated clientMessageId, redone with the lookup."""
        try:
            return self._write_one_statement(batch)
        except pw.IntegrityError:
            return self._write_pipelined(batch)

    def _write_one_statement(self, batch: list[NewMessage]) -> list[StoreResult]:
        """The whole batch as one autocommitted statement: one round trip.

        Message ids and events need no ``seq``, so they are made here; the
        statement locks the conversation rows in id order, advances their
        counters, numbers the messages from them and inserts messages and
        events, returning each stored message's ``seq``.
        """
        plan = BatchPlan(batch, {})
        if not plan.fresh:
            return plan.finish()
        now = utc_now_ms()
        created_at = to_iso(now)
        ranks: Counter[str] = Counter()
        rows: list[dict[str, Any]] = []
        for index in plan.fresh:
            request = batch[index]
            ranks[request.conversation_id] += 1
            message_id = new_id("msg")
            dedupe_id, payload = self._event(message_id, request, created_at)
            rows.append({"id": message_id, "conversation_id": request.conversation_id,
                         "sender_id": request.sender_id, "content": request.content,
                         "client_message_id": request.client_message_id,
                         "rank": ranks[request.conversation_id], "dedupe_id": dedupe_id,
                         "payload": payload})
        cursor = self._execute_prepared([orjson.dumps(rows).decode(), now])
        seqs: dict[str, int] = dict(cursor.fetchall())
        for index, row in zip(plan.fresh, rows, strict=True):
            request = batch[index]
            message_id = row["id"]
            seq = seqs.get(message_id)
            plan.results[index] = NotFound(
                f"Conversation {request.conversation_id!r} does not exist") if seq is None \
                else StoredMessage(
                    id=message_id, conversation_id=request.conversation_id,
                    sender_id=request.sender_id, content=request.content, created_at=now,
                    seq=seq, participants=request.participants,
                    client_message_id=request.client_message_id)
        return plan.finish()

    def _execute_prepared(self, args: list[Any]) -> Any:
        """Run the batch statement, preparing it first on a connection that
        lacks it (a new one, or one that replaced a broken one)."""
        try:
            return self.database.execute_sql(_EXECUTE_BATCH, args)
        except pw.DatabaseError as exc:  # peewee keeps psycopg2's error as ``orig``
            if getattr(getattr(exc, "orig", None), "pgcode", None) != \
                    _UNDEFINED_PREPARED_STATEMENT:
                raise
        self.database.execute_sql(_PREPARE_BATCH)
        return self.database.execute_sql(_EXECUTE_BATCH, args)

    def _write_pipelined(self, batch: list[NewMessage]) -> list[StoreResult]:
        """The batch in one transaction, looking up repeated clientMessageIds first."""
        transaction = _PipelinedTransaction(self.database)
        try:
            results = self._write_batch(batch, transaction)
            transaction.commit()
        except BaseException:
            transaction.rollback()
            raise
        return results

    def _reserve_seqs(self, counts: Counter[str], now: datetime, sql: Statements
                      ) -> dict[str, int]:
        """One read for any batch, locking the rows in id order (so concurrent
        batches of other workers cannot deadlock) and returning the counters;
        the UPDATE that sets the new values is a held write, sent with the
        inserts and the commit."""
        ids = sorted(counts)
        rows = sql.query("SELECT id, last_seq FROM conversation WHERE id = ANY(%s) "
                         "ORDER BY id FOR UPDATE", (ids,))
        first = {cid: last + 1 for cid, last in rows}
        if first:
            values = ", ".join(["(%s, %s)"] * len(first))
            sql.write(
                "UPDATE conversation AS c SET last_seq = v.last_seq, "
                "last_message_at = %s, updated_at = %s "
                f"FROM (VALUES {values}) AS v(id, last_seq) WHERE c.id = v.id",
                [now, now, *[item for cid, seq in first.items()
                             for item in (cid, seq - 1 + counts[cid])]])
        return first


class _PipelinedTransaction:
    """A PostgreSQL transaction in as few round trips as its reads allow.

    peewee runs psycopg2 in autocommit mode and sends ``BEGIN`` and ``COMMIT``
    as round trips of their own, and every statement is one more: seven for
    a batch. Here ``BEGIN`` travels with the first read, and writes are held
    and sent together with ``COMMIT`` at the end: two round trips.
    psycopg2 interpolates parameters client-side and sends a multi-statement
    string as one simple query; the cursor holds the last statement's rows,
    and an error stops the string there, leaving the transaction to
    :meth:`rollback`.
    """

    def __init__(self, database: pw.Database) -> None:
        self._database = database
        self._held: list[str] = ["BEGIN"]
        self._params: list[Any] = []
        self._begun = False

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return list(self._send(sql, params).fetchall())

    def write(self, sql: str, params: Sequence[Any]) -> None:
        self._held.append(sql)
        self._params.extend(params)

    def commit(self) -> None:
        self._send("COMMIT", ())

    def rollback(self) -> None:
        """After a failure: end the transaction if one was begun (best effort:
        on a broken connection this fails too, and the session discards it)."""
        if self._begun:
            with contextlib.suppress(Exception):
                self._database.execute_sql("ROLLBACK")

    def _send(self, sql: str, params: Sequence[Any]) -> Any:
        text = "; ".join([*self._held, sql])
        values = [*self._params, *params]
        self._held.clear()
        self._params.clear()
        self._begun = True
        return self._database.execute_sql(text, values)
