"""What both SQL dialects share: the batch written statement by statement.

:class:`~tornchat.storage.store.ChatStore` picks one :class:`Dialect`
(:mod:`~tornchat.storage.sqlite` or :mod:`~tornchat.storage.postgres`) for its
database and hands it everything that differs between them: how a thread
holds its connection, how a write transaction begins, how a batch reaches the
database and how the conversation counters are advanced.

Guarantees implemented here, for both dialects:

- a message, its ``seq`` and its outbox event commit in one transaction
  (:meth:`Dialect._write_batch`: the counters, both multi-row inserts and the
  commit belong to the caller's one transaction);
- ``seq`` is gap-free per conversation: the conversation row's ``last_seq``
  is advanced inside that transaction (:meth:`Dialect._reserve_seqs`, where
  each dialect says how the row is locked) and ``(conversation, seq)`` is
  unique;
- a repeated ``(sender, clientMessageId)`` returns the original message
  (:class:`BatchPlan`, from the lookup of :meth:`Dialect.existing_client_ids`);
- a sender's read position (``participant.last_read_seq`` and
  ``last_read_at``) moves to its newest message of the batch in the same
  transaction, and never backwards.

Thread rule: blocking; runs off the IOLoop, inside a session of the store (the
group-commit writer's thread, or the store's executor).
"""

from __future__ import annotations

import abc
import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import peewee as pw

from tornchat.contract.event_schema import encode_event, message_sent_event, new_dedupe_id
from tornchat.contract.ids import new_id
from tornchat.contract.records import StoredMessage
from tornchat.contract.timefmt import to_iso, utc_now_ms
from tornchat.errors import NotFound

if TYPE_CHECKING:  # the store imports this module; these are annotations only
    from tornchat.storage.store import NewMessage, StoreResult

MESSAGE_COLUMNS = "id, conversation_id, sender_id, content, created_at, seq, client_message_id"
MESSAGE_INSERT = f"INSERT INTO message ({MESSAGE_COLUMNS})"
OUTBOX_INSERT = ("INSERT INTO outbox (message_id, conversation_id, dedupe_id, payload, "
                 "created_at, attempts)")
# a participant's read position moves forward only (SET sees the old row)
ADVANCE_READ = ("UPDATE participant SET "
                "last_read_at = CASE WHEN last_read_seq < {p} THEN {p} ELSE last_read_at END, "
                "last_read_seq = CASE WHEN last_read_seq < {p} THEN {p} ELSE last_read_seq END "
                "WHERE conversation_id = {p} AND user_id = {p}")


class Statements(Protocol):
    """How a batch's SQL reaches the database: reads answer now, writes may wait."""

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...

    def write(self, sql: str, params: Sequence[Any]) -> None: ...


class DirectStatements:
    """Every statement in its own call (SQLite: calls are local and cheap)."""

    def __init__(self, database: pw.Database) -> None:
        self._database = database

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return list(self._database.execute_sql(sql, params).fetchall())

    def write(self, sql: str, params: Sequence[Any]) -> None:
        self._database.execute_sql(sql, params)


class BatchPlan:
    """Which requests of a batch to insert, and the results as they are known.

    A request whose (sender, clientMessageId) was stored before gets that
    original (``originals``); a repeat of an earlier request in the same batch
    gets the same outcome as that one, marked duplicate. Everything else is
    ``fresh``: to be inserted, its result filled in by the writing code.
    """

    def __init__(self, batch: list[NewMessage],
                 originals: dict[tuple[str, str], StoredMessage]) -> None:
        self.results: list[StoreResult | None] = [None] * len(batch)
        self.fresh: list[int] = []
        self._same_as: dict[int, int] = {}
        first_of_key: dict[tuple[str, str], int] = {}
        for index, message in enumerate(batch):
            key = (message.sender_id, message.client_message_id or "")
            if message.client_message_id is None:
                self.fresh.append(index)
            elif key in originals:
                self.results[index] = originals[key]
            elif key in first_of_key:
                self._same_as[index] = first_of_key[key]
            else:
                first_of_key[key] = index
                self.fresh.append(index)

    def finish(self) -> list[StoreResult]:
        """The results, once every fresh request has one."""
        for index, original in self._same_as.items():
            first = self.results[original]
            self.results[index] = (dataclasses.replace(first, duplicate=True)
                                   if isinstance(first, StoredMessage) else first)
        return [result for result in self.results if result is not None]


class Dialect(abc.ABC):
    """The SQL of one database kind, over one peewee database.

    ``participants`` loads a conversation's participants inside the current
    session (the store's cached lookup); stored rows are returned with them.
    """

    #: the calling thread keeps its connection open between units of work
    keeps_connection: bool

    def __init__(self, database: pw.Database, event_source: str,
                 participants: Callable[[str], tuple[str, ...]]) -> None:
        self.database = database
        self._event_source = event_source
        self._participants = participants

    @abc.abstractmethod
    def reader_threads(self, pool_size: int) -> int:
        """How many threads the store's executor may read with at once."""

    @abc.abstractmethod
    def writer_threads(self, wanted: int) -> int:
        """How many group-commit writer threads may commit batches at once."""

    @abc.abstractmethod
    def write_transaction(self) -> Any:
        """A peewee ``atomic`` context for a transaction that will write."""

    @abc.abstractmethod
    def insert_batch(self, batch: list[NewMessage]) -> list[StoreResult]:
        """Commit the batch in one transaction, one result per request.

        Raises ``IntegrityError`` when a concurrent writer stored one of its
        clientMessageIds first; nothing of the batch is stored then.
        """

    @abc.abstractmethod
    def _reserve_seqs(self, counts: Counter[str], now: datetime, sql: Statements
                      ) -> dict[str, int]:
        """Advance each (existing) conversation's counter by its count, in id
        order; returns each one's first new seq. ``counts`` is never empty."""

    def lock_rows_of(self, alias: str) -> str:
        """Appended to a SELECT whose ``alias`` rows the transaction will
        update: PostgreSQL locks just those rows; SQLite's IMMEDIATE
        transaction already holds the one writer lock."""
        return ""

    def timestamp(self, value: Any) -> Any:
        """A timestamp column as the driver returned it, as a datetime."""
        return value

    def stored_message(self, row: tuple[Any, ...], duplicate: bool = False,
                       participants: tuple[str, ...] | None = None) -> StoredMessage:
        """A StoredMessage from a raw ``MESSAGE_COLUMNS`` row (``participants``:
        its conversation's, when the caller knows them already)."""
        message_id, conversation_id, sender_id, content, created_at, seq, client_id = row
        return StoredMessage(
            id=message_id, conversation_id=conversation_id, sender_id=sender_id,
            content=content, created_at=self.timestamp(created_at), seq=seq,
            participants=participants or self._participants(conversation_id),
            client_message_id=client_id, duplicate=duplicate)

    def existing_client_ids(self, batch: list[NewMessage], sql: Statements | None = None
                            ) -> dict[tuple[str, str], StoredMessage]:
        """The stored originals of the batch's ``(sender, clientMessageId)`` pairs."""
        keys = list({(m.sender_id, m.client_message_id) for m in batch
                     if m.client_message_id is not None})
        if not keys:
            return {}
        param = self.database.param
        pairs = ", ".join([f"({param}, {param})"] * len(keys))
        rows = (sql or DirectStatements(self.database)).query(
            f"SELECT {MESSAGE_COLUMNS} FROM message "
            f"WHERE (sender_id, client_message_id) IN ({pairs})",
            [value for key in keys for value in key])
        found: dict[tuple[str, str], StoredMessage] = {}
        for row in rows:
            message = self.stored_message(row, duplicate=True)
            found[(message.sender_id, message.client_message_id or "")] = message
        return found

    def _write_batch(self, batch: list[NewMessage], sql: Statements) -> list[StoreResult]:
        """The batch statement by statement, looking up repeated clientMessageIds
        first (SQLite, and the PostgreSQL redo after the index objected). The
        caller owns the transaction."""
        plan = BatchPlan(batch, self.existing_client_ids(batch, sql))
        now = utc_now_ms()
        created_at = to_iso(now)
        counts = Counter(batch[i].conversation_id for i in plan.fresh)
        next_seq = self._reserve_seqs(counts, now, sql) if counts else {}
        message_rows: list[tuple[Any, ...]] = []
        outbox_rows: list[tuple[Any, ...]] = []
        read_to: dict[tuple[str, str], int] = {}  # (conversation, sender) -> newest seq
        for index in plan.fresh:
            request = batch[index]
            if request.conversation_id not in next_seq:
                plan.results[index] = NotFound(
                    f"Conversation {request.conversation_id!r} does not exist")
                continue
            seq = next_seq[request.conversation_id]
            next_seq[request.conversation_id] = seq + 1
            stored = StoredMessage(
                id=new_id("msg"), conversation_id=request.conversation_id,
                sender_id=request.sender_id, content=request.content, created_at=now,
                seq=seq, participants=request.participants,
                client_message_id=request.client_message_id)
            plan.results[index] = stored
            message_rows.append((stored.id, stored.conversation_id, stored.sender_id,
                                 stored.content, now, seq, stored.client_message_id))
            dedupe_id, payload = self._event(stored.id, request, created_at)
            outbox_rows.append((stored.id, stored.conversation_id, dedupe_id, payload, now, 0))
            read_to[(stored.conversation_id, stored.sender_id)] = seq
        self._insert_rows(MESSAGE_INSERT, message_rows, sql)
        self._insert_rows(OUTBOX_INSERT, outbox_rows, sql)
        advance = ADVANCE_READ.format(p=self.database.param)
        for (conversation_id, sender_id), seq in read_to.items():
            sql.write(advance, (seq, now, seq, seq, conversation_id, sender_id))
        return plan.finish()

    def _event(self, message_id: str, request: NewMessage, created_at: str) -> tuple[str, str]:
        """A new message's ``MessageSent`` event: its dedupeId and its JSON."""
        dedupe_id = new_dedupe_id()
        return dedupe_id, encode_event(message_sent_event(
            message_id, request, created_at, self._event_source, dedupe_id))

    def _insert_rows(self, head: str, rows: list[tuple[Any, ...]], sql: Statements) -> None:
        """One multi-row INSERT (plain SQL: the hot path skips query building)."""
        if not rows:
            return
        placeholders = "(" + ", ".join([self.database.param] * len(rows[0])) + ")"
        values = ", ".join([placeholders] * len(rows))
        sql.write(f"{head} VALUES {values}", [value for row in rows for value in row])
