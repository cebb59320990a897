"""The repository: every database read and write of the chat, blocking.

Thread rule: these methods block and must run on the store's executor, never
on an IOLoop thread (:class:`tornchat.service.ChatService` does that). Every
database failure becomes :class:`Unavailable`, which the contract maps to
"nothing was stored, you may retry".

Guarantees implemented here:
- a message, its ``seq`` and its outbox event commit in one transaction;
- ``seq`` is gap-free per conversation: the conversation row's ``last_seq`` is
  incremented inside that transaction (a row lock on PostgreSQL, the single
  writer lock on SQLite) and ``(conversation, seq)`` is unique;
- find-or-create by participant set is race-free through the unique
  ``participant_key``: the loser of a race re-reads the winner's row;
- a repeated ``(sender, clientMessageId)`` returns the original message.

Writes are batched (:meth:`ChatStore.store_batch`): one transaction per
batch, the conversation rows locked in id order (so concurrent batches cannot
deadlock), two multi-row inserts and a single commit. On PostgreSQL the whole
batch is one prepared statement and one round trip (:data:`_PREPARE_BATCH`),
plus a redo (:class:`_PipelinedTransaction`) when the unique index reports a
repeated ``clientMessageId``: the round trip and the commit's fsync, not SQL
work, are what a message costs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import peewee as pw
from playhouse.pool import MaxConnectionsExceeded

from tornchat.contract.event_schema import encode_event, message_sent_event, new_dedupe_id
from tornchat.contract.ids import new_id
from tornchat.contract.records import StoredMessage
from tornchat.contract.timefmt import to_iso, utc_now_ms
from tornchat.errors import ChatError, Forbidden, NotFound, Unavailable
from tornchat.storage.database import close_connection, close_database, is_sqlite
from tornchat.storage.models import define_models

# Pool exhaustion (every connection busy for 10 s) is an outage too.
_DB_DOWN_ERRORS = (pw.OperationalError, pw.InterfaceError, MaxConnectionsExceeded)


@dataclass(frozen=True)
class NewMessage:
    """A message to store in a conversation the sender is known to belong to."""

    sender_id: str
    conversation_id: str
    participants: tuple[str, ...]
    content: str
    client_message_id: str | None = None


StoreResult = StoredMessage | ChatError

_MESSAGE_COLUMNS = "id, conversation_id, sender_id, content, created_at, seq, client_message_id"
_MESSAGE_INSERT = f"INSERT INTO message ({_MESSAGE_COLUMNS})"
_OUTBOX_INSERT = ("INSERT INTO outbox (message_id, conversation_id, dedupe_id, payload, "
                  "created_at, attempts)")

# PostgreSQL: a batch in one autocommitted statement, prepared once per
# connection (planning it costs more than running it). The arrays hold one
# element per new message; ``rank`` numbers a conversation's messages in the
# batch from 1. ``locked`` takes the conversation row locks in id order (two
# workers' batches over the same conversations cannot deadlock); ``bumped``
# advances each counter (an UPDATE applies to the newest row version, so
# concurrent batches never share a seq); messages are numbered from the old
# counter, and events inserted in seq order, so the outbox follows it.
_BATCH_STATEMENT = "tornchat_store_batch"
_PREPARE_BATCH = (
    f"PREPARE {_BATCH_STATEMENT} "
    "(text[], text[], text[], text[], text[], int[], text[], text[], timestamp) AS "
    "WITH v AS (SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8) AS v(id, conversation_id, "
    "sender_id, content, client_message_id, rank, dedupe_id, payload)), "
    "n AS (SELECT conversation_id, count(*) AS added FROM v GROUP BY conversation_id), "
    "locked AS MATERIALIZED (SELECT id FROM conversation "
    "WHERE id IN (SELECT conversation_id FROM n) ORDER BY id FOR UPDATE), "
    "bumped AS (UPDATE conversation AS c SET last_seq = c.last_seq + n.added, "
    "last_message_at = $9, updated_at = $9 "
    "FROM n JOIN locked ON locked.id = n.conversation_id WHERE c.id = n.conversation_id "
    "RETURNING c.id, c.last_seq - n.added AS base), "
    f"stored AS ({_MESSAGE_INSERT} SELECT v.id, v.conversation_id, v.sender_id, v.content, "
    "$9, b.base + v.rank, v.client_message_id FROM v JOIN bumped AS b "
    "ON b.id = v.conversation_id RETURNING id, seq), "
    f"events AS ({_OUTBOX_INSERT} SELECT v.id, v.conversation_id, v.dedupe_id, v.payload, "
    "$9, 0 FROM v JOIN stored AS s ON s.id = v.id ORDER BY v.conversation_id, s.seq) "
    "SELECT id, seq FROM stored")
_EXECUTE_BATCH = f"EXECUTE {_BATCH_STATEMENT} ({', '.join(['%s'] * 9)})"
_UNDEFINED_PREPARED_STATEMENT = "26000"


def require_member(participants: tuple[str, ...], user_id: str) -> tuple[str, ...]:
    """The participants, if ``user_id`` is one of them; else Forbidden."""
    if user_id not in participants:
        raise Forbidden("You are not a participant of this conversation")
    return participants


def participant_key(user_ids: frozenset[str]) -> str:
    """A digest naming an exact participant set (order-free, unambiguous:
    the sorted ids are JSON-encoded, so no id can mimic a separator)."""
    encoded = json.dumps(sorted(user_ids), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


class _ParticipantCache:
    """Bounded LRU of conversation → participants (sets never change)."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, conversation_id: str) -> tuple[str, ...] | None:
        with self._lock:
            found = self._items.get(conversation_id)
            if found is not None:
                self._items.move_to_end(conversation_id)
            return found

    def put(self, conversation_id: str, participants: tuple[str, ...]) -> None:
        with self._lock:
            self._items[conversation_id] = participants
            self._items.move_to_end(conversation_id)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)


class _Statements(Protocol):
    """How a batch's SQL reaches the database: reads answer now, writes may wait."""

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...

    def write(self, sql: str, params: Sequence[Any]) -> None: ...


class _DirectStatements:
    """Every statement in its own call (SQLite: calls are local and cheap)."""

    def __init__(self, database: pw.Database) -> None:
        self._database = database

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return list(self._database.execute_sql(sql, params).fetchall())

    def write(self, sql: str, params: Sequence[Any]) -> None:
        self._database.execute_sql(sql, params)


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


class _BatchPlan:
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


class ChatStore:
    """Blocking repository over one peewee database."""

    def __init__(self, database: pw.Database, event_source: str = "chat-service") -> None:
        self.database = database
        self.models = define_models(database)
        self._event_source = event_source
        self._participants = _ParticipantCache()

    # -- plumbing ---------------------------------------------------------

    @contextlib.contextmanager
    def _session(self, keep_open: bool = False) -> Iterator[None]:
        """A connection for one unit of work; DB failures become Unavailable.

        ``keep_open``: the calling thread keeps its pooled connection for the
        next call (the writer thread, which writes all day); other threads
        hand theirs back to the pool.
        """
        try:
            if keep_open or is_sqlite(self.database):
                self.database.connect(reuse_if_open=True)
                yield
            else:
                with self.database.connection_context():
                    yield
        except _DB_DOWN_ERRORS as exc:
            self._discard_connection()
            raise Unavailable("Storage is unavailable; nothing was stored, retry later") from exc

    def _discard_connection(self) -> None:
        close_connection(self.database)
        if hasattr(self.database, "close_stale"):
            with contextlib.suppress(Exception):
                self.database.close_stale(age=0)

    def _write_transaction(self) -> Any:
        if is_sqlite(self.database):
            return self.database.atomic(lock_type="IMMEDIATE")
        return self.database.atomic()

    def release_connection(self) -> None:
        """Close this thread's connection (SQLite keeps one per thread)."""
        close_connection(self.database)

    def close(self) -> None:
        close_database(self.database)

    def ping(self) -> None:
        """Raise Unavailable unless the database answers ``SELECT 1``."""
        with self._session():
            self.database.execute_sql("SELECT 1").fetchone()

    # -- reads ------------------------------------------------------------

    def cached_participants(self, conversation_id: str) -> tuple[str, ...] | None:
        """The cached participant set, or None; never touches the database,
        so the IOLoop may call it (the cache is lock-protected)."""
        return self._participants.get(conversation_id)

    def participants_of(self, conversation_id: str) -> tuple[str, ...]:
        """The participants, or NotFound; cached since sets never change."""
        cached = self._participants.get(conversation_id)
        if cached is not None:
            return cached
        with self._session():
            return self._load_participants(conversation_id)

    def _load_participants(self, conversation_id: str) -> tuple[str, ...]:
        cached = self._participants.get(conversation_id)
        if cached is not None:
            return cached
        Participant = self.models.Participant
        rows = (Participant.select(Participant.user_id)
                .where(Participant.conversation == conversation_id)
                .order_by(Participant.user_id)
                .tuples())
        users = tuple(user for (user,) in rows)
        if not users:
            raise NotFound(f"Conversation {conversation_id!r} does not exist")
        self._participants.put(conversation_id, users)
        return users

    def member_participants(self, conversation_id: str, user_id: str) -> tuple[str, ...]:
        """Participants of a conversation the user belongs to (else Forbidden)."""
        return require_member(self.participants_of(conversation_id), user_id)

    def messages_of(self, conversation_id: str) -> list[StoredMessage]:
        """Every stored message of a conversation in ``seq`` order (tests, tools)."""
        with self._session():
            self._load_participants(conversation_id)  # NotFound for an unknown id
            cursor = self.database.execute_sql(
                f"SELECT {_MESSAGE_COLUMNS} FROM message WHERE conversation_id = "
                f"{self.database.param} ORDER BY seq", (conversation_id,))
            return [self._from_row(row) for row in cursor.fetchall()]

    # -- writes -----------------------------------------------------------

    def find_or_create_conversation(self, user_ids: frozenset[str]) -> str:
        """The id of the conversation with exactly these participants."""
        key = participant_key(user_ids)
        Conversation = self.models.Conversation
        with self._session():
            found = Conversation.get_or_none(Conversation.participant_key == key)
            if found is not None:
                return found.id
            conversation_id = new_id("c")
            try:
                with self._write_transaction():
                    Conversation.insert(id=conversation_id, participant_key=key).execute()
                    self.models.Participant.insert_many(
                        [{"id": new_id("p"), "user_id": user, "conversation": conversation_id}
                         for user in sorted(user_ids)]
                    ).execute()
            except pw.IntegrityError:
                return Conversation.get(Conversation.participant_key == key).id
        self._participants.put(conversation_id, tuple(sorted(user_ids)))
        return conversation_id

    def store_message(
        self,
        sender_id: str,
        conversation_id: str,
        participants: tuple[str, ...],
        content: str,
        client_message_id: str | None = None,
    ) -> StoredMessage:
        """Commit one message (see :meth:`store_batch`); raises its error."""
        [result] = self.store_batch([NewMessage(sender_id, conversation_id, participants,
                                                content, client_message_id)])
        if isinstance(result, ChatError):
            raise result
        return result

    def store_batch(self, batch: list[NewMessage]) -> list[StoreResult]:
        """Commit messages with their seq and outbox events in one transaction.

        Returns one result per request, in order: the stored (or, for a
        repeated clientMessageId, the original) message, or the ChatError of
        that request. A storage failure raises Unavailable for the whole batch:
        nothing of it was stored. Meant for one dedicated thread, which keeps
        its connection between batches.
        """
        with self._session(keep_open=True):
            try:
                return self._insert_batch(batch)
            except pw.IntegrityError:
                # A concurrent writer elsewhere stored one of these clientMessageIds
                # first: redo one by one so only that request becomes a duplicate.
                return [self._insert_alone(message) for message in batch]

    def _insert_alone(self, message: NewMessage) -> StoreResult:
        try:
            return self._insert_batch([message])[0]
        except pw.IntegrityError:
            if message.client_message_id is not None:
                key = (message.sender_id, message.client_message_id)
                existing = self._existing_client_ids([message]).get(key)
                if existing is not None:
                    return existing
            raise

    def _insert_batch(self, batch: list[NewMessage]) -> list[StoreResult]:
        """One transaction for the batch: SQLite through peewee's ``atomic``,
        PostgreSQL in one prepared statement (:data:`_PREPARE_BATCH`)."""
        if is_sqlite(self.database):
            with self._write_transaction():
                return self._write_batch(batch, _DirectStatements(self.database))
        # Optimistic first: a repeated clientMessageId is rare (a client retrying
        # after a lost acknowledgement), so the batch skips looking for one and
        # lets the unique index object; then it is redone with the lookup.
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
        plan = _BatchPlan(batch, {})
        if not plan.fresh:
            return plan.finish()
        now = utc_now_ms()
        created_at = to_iso(now)
        ranks: Counter[str] = Counter()
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [])
        ids, conversations, senders, contents, client_ids, rank_of, dedupe_ids, payloads = columns
        for index in plan.fresh:
            request = batch[index]
            ranks[request.conversation_id] += 1
            message_id = new_id("msg")
            dedupe_id, payload = self._event(message_id, request, created_at)
            ids.append(message_id)
            conversations.append(request.conversation_id)
            senders.append(request.sender_id)
            contents.append(request.content)
            client_ids.append(request.client_message_id)
            rank_of.append(ranks[request.conversation_id])
            dedupe_ids.append(dedupe_id)
            payloads.append(payload)
        cursor = self._execute_prepared([*columns, now])
        seqs: dict[str, int] = dict(cursor.fetchall())
        for index, message_id in zip(plan.fresh, ids, strict=True):
            request = batch[index]
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

    def _write_batch(self, batch: list[NewMessage], sql: _Statements) -> list[StoreResult]:
        """The batch statement by statement, looking up repeated clientMessageIds
        first (SQLite, and the PostgreSQL redo after the index objected)."""
        plan = _BatchPlan(batch, self._existing_client_ids(batch, sql))
        now = utc_now_ms()
        created_at = to_iso(now)
        next_seq = self._reserve_seqs(
            Counter(batch[i].conversation_id for i in plan.fresh), now, sql)
        message_rows: list[tuple[Any, ...]] = []
        outbox_rows: list[tuple[Any, ...]] = []
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
        self._insert_rows(_MESSAGE_INSERT, message_rows, sql)
        self._insert_rows(_OUTBOX_INSERT, outbox_rows, sql)
        return plan.finish()

    def _event(self, message_id: str, request: NewMessage, created_at: str) -> tuple[str, str]:
        """A new message's ``MessageSent`` event: its dedupeId and its JSON."""
        dedupe_id = new_dedupe_id()
        return dedupe_id, encode_event(message_sent_event(
            message_id, request, created_at, self._event_source, dedupe_id))

    def _insert_rows(self, head: str, rows: list[tuple[Any, ...]], sql: _Statements) -> None:
        """One multi-row INSERT (plain SQL: the hot path skips query building)."""
        if not rows:
            return
        placeholders = "(" + ", ".join([self.database.param] * len(rows[0])) + ")"
        values = ", ".join([placeholders] * len(rows))
        sql.write(f"{head} VALUES {values}", [value for row in rows for value in row])

    def _existing_client_ids(self, batch: list[NewMessage], sql: _Statements | None = None
                             ) -> dict[tuple[str, str], StoredMessage]:
        keys = list({(m.sender_id, m.client_message_id) for m in batch
                     if m.client_message_id is not None})
        if not keys:
            return {}
        param = self.database.param
        pairs = ", ".join([f"({param}, {param})"] * len(keys))
        rows = (sql or _DirectStatements(self.database)).query(
            f"SELECT {_MESSAGE_COLUMNS} FROM message "
            f"WHERE (sender_id, client_message_id) IN ({pairs})",
            [value for key in keys for value in key])
        found: dict[tuple[str, str], StoredMessage] = {}
        for row in rows:
            message = self._from_row(row, duplicate=True)
            found[(message.sender_id, message.client_message_id or "")] = message
        return found

    def _reserve_seqs(self, counts: Counter[str], now: Any, sql: _Statements
                      ) -> dict[str, int]:
        """Advance each conversation's counter; returns its first new seq.

        SQLite (one writer, local calls): one UPDATE … RETURNING per
        conversation. PostgreSQL: one read for any batch, locking the rows in
        id order (so concurrent batches of other workers cannot deadlock) and
        returning the counters; the UPDATE that sets the new values is a held
        write, sent with the inserts and the commit.
        """
        if not counts:
            return {}
        param = self.database.param
        if is_sqlite(self.database):
            update = (f"UPDATE conversation SET last_seq = last_seq + {param}, "
                      f"last_message_at = {param}, updated_at = {param} "
                      f"WHERE id = {param} RETURNING id, last_seq")
            first: dict[str, int] = {}
            for cid in sorted(counts):
                for _, last in sql.query(update, (counts[cid], now, now, cid)):
                    first[cid] = last - counts[cid] + 1
            return first
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

    def _from_row(self, row: tuple[Any, ...], duplicate: bool = False) -> StoredMessage:
        """A StoredMessage from a raw ``_MESSAGE_COLUMNS`` row."""
        message_id, conversation_id, sender_id, content, created_at, seq, client_id = row
        if isinstance(created_at, str):  # SQLite returns the stored text
            created_at = datetime.fromisoformat(created_at)
        return StoredMessage(
            id=message_id, conversation_id=conversation_id, sender_id=sender_id,
            content=content, created_at=created_at, seq=seq,
            participants=self._load_participants(conversation_id),
            client_message_id=client_id, duplicate=duplicate)
