"""The relay's side of the transactional outbox: claim, mark sent, prune, measure.

:mod:`tornchat.storage` writes each ``MessageSent`` event into ``outbox`` in
the message's own transaction, and each ``ConversationRead`` in the
transaction of the read-position move
(:mod:`tornchat.storage.readstate`); this module is how a relay reads those
rows back and records that Kafka acknowledged them.

Claiming differs per database:

- **PostgreSQL**, several relays (every worker of every instance): a batch is
  claimed inside a transaction that holds ``pg_try_advisory_xact_lock`` on each
  of its *conversations*, and the transaction stays open until the batch's
  rows are marked sent. A conversation therefore belongs to one relay at a
  time and always restarts from its oldest unsent row, which keeps
  per-conversation order across relays and after a failed batch, while other
  relays take other conversations. Rows are re-read after the locks are held,
  so a row another relay has just marked sent is never sent again.
- **SQLite**: exactly one relay per database file (see
  :class:`SingleRelayLock`); it reads a batch without a transaction and marks
  it in a short write transaction, so chat writes are never blocked while
  Kafka is slow.

Within a conversation, ``MessageSent`` rows' ids grow in ``seq`` order: the
message transaction inserts its outbox row after taking the conversation row
lock. A ``ConversationRead`` row takes no conversation lock: it is ordered
with the reader's other moves (each locks the participant row), not with the
messages, and carries the position it moved to.

Thread rule: blocking; only the relay thread (or a CLI command) calls it.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

import peewee as pw

from tornchat.contract.timefmt import utc_now_ms
from tornchat.storage.database import close_database, is_sqlite
from tornchat.storage.models import define_models

#: first key of the two-int advisory locks, "tobx"; the second is hashtext(conversation)
_ADVISORY_CLASS = 0x746F6278
#: a claim looks at this many times the batch size of the oldest pending rows,
#: so a relay finds work beyond conversations another relay holds
_SCAN_FACTOR = 4
#: conversations asked for in one round trip of try-locks
_LOCK_CHUNK = 64
_PRUNE_CHUNK = 5000


@dataclass(frozen=True)
class OutboxRow:
    """One pending event: ``payload`` is the exact JSON to publish."""

    id: int
    conversation_id: str
    payload: str


@dataclass(frozen=True)
class Backlog:
    """Unsent events and the age in seconds of the oldest (0 when empty)."""

    size: int
    oldest_age: float


#: publishes a batch and returns the ids Kafka acknowledged
Publish = Callable[[Sequence[OutboxRow]], Collection[int]]


class OutboxStore:
    """Blocking access to the ``outbox`` table for one relay."""

    def __init__(self, database: pw.Database) -> None:
        self.database = database
        self.Outbox = define_models(database).Outbox
        self.is_sqlite = is_sqlite(database)
        #: set by :meth:`relay_batch`: unsent rows remain beyond the last batch
        self.more_pending = False
        #: ids Kafka acknowledged whose ``sent_at`` has not committed yet
        self._unrecorded: set[int] = set()

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        if self.is_sqlite:
            self.database.connect(reuse_if_open=True)
            yield
        else:
            with self.database.connection_context():
                yield

    def relay_batch(self, limit: int, publish: Publish) -> tuple[int, int]:
        """Claim up to ``limit`` rows, publish them, mark the acknowledged ones.

        Returns ``(claimed, acknowledged)``; ``claimed == 0`` means there was
        nothing this relay may send now. Afterwards :attr:`more_pending` says
        whether unsent rows were seen beyond this batch (a full batch, or on
        PostgreSQL rows of conversations other relays hold): the relay goes
        straight on instead of waiting for new events to gather.
        """
        with self._session():
            self._record_unrecorded()
            if self.is_sqlite:
                rows = self._pending(limit)
                self.more_pending = len(rows) >= limit
                delivered = self._published(publish, rows)
                if rows:
                    with self.database.atomic(lock_type="IMMEDIATE"):
                        self._mark(rows, delivered)
            else:
                with self.database.atomic():
                    rows = self._claim_postgres(limit)
                    delivered = self._published(publish, rows)
                    if rows:
                        self._mark(rows, delivered)
            self._unrecorded.difference_update(delivered)
            return len(rows), len(delivered)

    def _published(self, publish: Publish, rows: Sequence[OutboxRow]) -> Collection[int]:
        """Publish ``rows``; the acknowledged ids count as unrecorded until committed."""
        delivered = publish(rows) if rows else ()
        self._unrecorded.update(delivered)
        return delivered

    def _record_unrecorded(self) -> None:
        """Mark sent the rows Kafka acknowledged but whose mark never committed.

        The database went away between the broker's acknowledgement and the
        commit (a PostgreSQL restart, a dropped connection): without this the
        next claim would find those rows unsent and publish them a second
        time. A repeat is still possible when the relay process dies in that
        window, or when on PostgreSQL another relay claims the rows before
        this one is back (the advisory locks went with the connection).
        """
        if not self._unrecorded:
            return
        with self.database.atomic():
            self._set_sent(sorted(self._unrecorded))
        self._unrecorded.clear()

    def flush_unrecorded(self) -> None:
        """At shutdown: record what Kafka acknowledged but the database never
        heard of, if the database answers now (best effort; otherwise those
        rows are sent again by the next relay)."""
        if not self._unrecorded:
            return
        with contextlib.suppress(pw.OperationalError, pw.InterfaceError), self._session():
            self._record_unrecorded()

    def _pending(self, limit: int, conversations: list[str] | None = None) -> list[OutboxRow]:
        """The oldest unsent rows (of ``conversations`` only, if given).

        Plain SQL, like the relay's other per-round statements: building them
        through peewee cost more CPU than the database spent running them.
        """
        param = self.database.param
        where = "sent_at IS NULL"
        params: list[Any] = []
        if conversations is not None:
            where += f" AND conversation_id IN ({', '.join([param] * len(conversations))})"
            params.extend(conversations)
        cursor = self.database.execute_sql(
            f"SELECT id, conversation_id, payload FROM outbox WHERE {where} "
            f"ORDER BY id LIMIT {param}", [*params, limit])
        return [OutboxRow(*row) for row in cursor.fetchall()]

    def _claim_postgres(self, limit: int) -> list[OutboxRow]:
        window = self.database.execute_sql(
            "SELECT conversation_id FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT %s",
            (limit * _SCAN_FACTOR,)).fetchall()
        self.more_pending = len(window) > limit
        rows_of: dict[str, int] = {}
        for (conversation,) in window:
            rows_of[conversation] = rows_of.get(conversation, 0) + 1
        order = list(rows_of)
        held: list[str] = []
        expected = 0
        start = 0
        while start < len(order) and expected < limit:
            # Only as many conversations as the rows still wanted need (if
            # every lock is granted), at most _LOCK_CHUNK per round trip:
            # locking every conversation in sight would leave the other relays
            # nothing to do while this one publishes.
            chunk: list[str] = []
            wanted = limit - expected
            while start < len(order) and wanted > 0 and len(chunk) < _LOCK_CHUNK:
                chunk.append(order[start])
                wanted -= rows_of[order[start]]
                start += 1
            got = self.database.execute_sql(
                "SELECT c FROM unnest(%s::text[]) WITH ORDINALITY AS u(c, n) "
                "WHERE pg_try_advisory_xact_lock(%s, hashtext(c)) ORDER BY n",
                (chunk, _ADVISORY_CLASS)).fetchall()
            for (conversation,) in got:
                held.append(conversation)
                expected += rows_of[conversation]
        if not held:
            return []
        # A fresh snapshot, taken with the locks held: rows another relay has
        # just marked sent are gone, and each conversation starts at its oldest.
        return self._pending(limit, held)

    def _mark(self, rows: Sequence[OutboxRow], delivered: Collection[int]) -> None:
        sent = [row.id for row in rows if row.id in delivered]
        failed = [row.id for row in rows if row.id not in delivered]
        param = self.database.param
        if sent:
            self._set_sent(sent)
        if failed:
            self.database.execute_sql(
                "UPDATE outbox SET attempts = attempts + 1 "
                f"WHERE id IN ({', '.join([param] * len(failed))})", failed)

    def _set_sent(self, ids: Sequence[int]) -> None:
        param = self.database.param
        self.database.execute_sql(
            f"UPDATE outbox SET sent_at = {param}, attempts = attempts + 1 "
            f"WHERE sent_at IS NULL AND id IN ({', '.join([param] * len(ids))})",
            [utc_now_ms(), *ids])

    def backlog(self) -> Backlog:
        """Size and age of the unsent backlog (uses the pending-rows index)."""
        Outbox = self.Outbox
        with self._session():
            size = Outbox.select().where(Outbox.sent_at.is_null()).count()
            oldest = (Outbox.select(Outbox.created_at).where(Outbox.sent_at.is_null())
                      .order_by(Outbox.id).limit(1).scalar())
        age = 0.0 if oldest is None else max(0.0, (utc_now_ms() - _naive(oldest))
                                             .total_seconds())
        return Backlog(size, age)

    def prune(self, retention: timedelta) -> int:
        """Delete rows sent more than ``retention`` ago; returns how many."""
        Outbox = self.Outbox
        cutoff = utc_now_ms() - retention
        removed = 0
        with self._session():
            while True:
                chunk = Outbox.select(Outbox.id).where(Outbox.sent_at < cutoff).limit(_PRUNE_CHUNK)
                count = Outbox.delete().where(Outbox.id.in_(chunk)).execute()
                removed += count
                if count < _PRUNE_CHUNK:
                    return removed

    def close(self) -> None:
        close_database(self.database)


def _naive(moment: Any) -> datetime:
    """``scalar()`` skips field conversion: SQLite hands back the stored text."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=None)


class SingleRelayLock:
    """At most one relay per SQLite file: an ``flock`` beside the database.

    The lock dies with its process, so a SIGKILLed worker never leaves a
    stale owner; a standby relay simply takes it on its next try. Databases
    other than an SQLite file need no lock (always acquired).
    """

    def __init__(self, database: pw.Database) -> None:
        path = getattr(database, "database", "")
        self._path = (f"{path}.relay-lock" if is_sqlite(database) and path
                      and path != ":memory:" else None)
        self._handle: IO[bytes] | None = None

    def try_acquire(self) -> bool:
        if self._path is None or self._handle is not None:
            return True
        handle = open(self._path, "ab")  # noqa: SIM115 - held for the relay's life
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

