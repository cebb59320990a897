"""The repository: every database read and write of the chat, blocking.

:class:`ChatStore` opens sessions, reads, finds or creates conversations and
takes batches of messages; it picks its database's :class:`Dialect` once
(:mod:`~tornchat.storage.sqlite` or :mod:`~tornchat.storage.postgres`) and
leaves every difference between the two to it. How a batch is written, and
the guarantees of message order and idempotence, are in
:mod:`~tornchat.storage.dialect`.

Thread rule: these methods block and must run on the store's executor, never
on an IOLoop thread (:class:`tornchat.service.ChatService` does that); only
:meth:`ChatStore.cached_participants` may run on the IOLoop. Every database
failure becomes :class:`Unavailable`, which the contract maps to "nothing was
stored, you may retry".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import peewee as pw
from playhouse.pool import MaxConnectionsExceeded

from tornchat.contract.ids import new_id
from tornchat.contract.records import StoredMessage
from tornchat.errors import ChatError, Forbidden, NotFound, Unavailable
from tornchat.storage.database import close_connection, close_database, is_sqlite
from tornchat.storage.dialect import MESSAGE_COLUMNS, Dialect
from tornchat.storage.models import define_models
from tornchat.storage.participants import ParticipantCache
from tornchat.storage.postgres import PostgresDialect
from tornchat.storage.sqlite import SqliteDialect

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


class ChatStore:
    """Blocking repository over one peewee database."""

    def __init__(self, database: pw.Database, event_source: str = "chat-service") -> None:
        self.database = database
        self.models = define_models(database)
        self._participants = ParticipantCache()
        kind = SqliteDialect if is_sqlite(database) else PostgresDialect
        self.dialect: Dialect = kind(database, event_source, self._load_participants)

    # -- plumbing ---------------------------------------------------------

    @contextlib.contextmanager
    def session(self, keep_open: bool = False) -> Iterator[None]:
        """A connection for one unit of work; DB failures become Unavailable.

        ``keep_open``: the calling thread keeps its pooled connection for the
        next call (the writer thread, which writes all day); other threads
        hand theirs back to the pool, unless the dialect keeps them.
        """
        try:
            if keep_open or self.dialect.keeps_connection:
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

    def release_connection(self) -> None:
        """Close this thread's connection (SQLite keeps one per thread)."""
        close_connection(self.database)

    def close(self) -> None:
        close_database(self.database)

    def ping(self) -> None:
        """Raise Unavailable unless the database answers ``SELECT 1``."""
        with self.session():
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
        with self.session():
            return self._load_participants(conversation_id)

    def _load_participants(self, conversation_id: str) -> tuple[str, ...]:
        """:meth:`participants_of_many` for one; NotFound if it does not exist."""
        users = (self._participants.get(conversation_id)
                 or self.participants_of_many([conversation_id]).get(conversation_id))
        if users is None:
            raise NotFound(f"Conversation {conversation_id!r} does not exist")
        return users

    def participants_of_many(self, conversation_ids: list[str]) -> dict[str, tuple[str, ...]]:
        """The participants of existing conversations, one query for the ones
        not cached (inside the caller's session)."""
        found = {cid: users for cid in conversation_ids
                 if (users := self._participants.get(cid)) is not None}
        missing = [cid for cid in conversation_ids if cid not in found]
        if missing:
            marks = ", ".join([self.database.param] * len(missing))
            loaded: dict[str, list[str]] = {}
            for cid, user in self.database.execute_sql(
                    "SELECT conversation_id, user_id FROM participant "
                    f"WHERE conversation_id IN ({marks})", missing):
                loaded.setdefault(cid, []).append(user)
            for cid, members in loaded.items():
                # sorted here, by code point: a database collation may order otherwise
                found[cid] = tuple(sorted(members))
                self._participants.put(cid, found[cid])
        return found

    def member_participants(self, conversation_id: str, user_id: str) -> tuple[str, ...]:
        """Participants of a conversation the user belongs to (else Forbidden)."""
        return require_member(self.participants_of(conversation_id), user_id)

    def messages_of(self, conversation_id: str) -> list[StoredMessage]:
        """Every stored message of a conversation in ``seq`` order (tests, tools)."""
        with self.session():
            self._load_participants(conversation_id)  # NotFound for an unknown id
            cursor = self.database.execute_sql(
                f"SELECT {MESSAGE_COLUMNS} FROM message WHERE conversation_id = "
                f"{self.database.param} ORDER BY seq", (conversation_id,))
            return [self.dialect.stored_message(row) for row in cursor.fetchall()]

    # -- writes -----------------------------------------------------------

    def find_or_create_conversation(self, user_ids: frozenset[str]) -> str:
        """The id of the conversation with exactly these participants."""
        return self.find_or_create(user_ids)[0]

    def find_or_create(self, user_ids: frozenset[str]) -> tuple[str, bool]:
        """The conversation with exactly these participants, and whether this
        call created it.

        Race-free through the unique ``participant_key``: the loser of a race
        to create the same set re-reads the winner's row.
        """
        key = participant_key(user_ids)
        Conversation = self.models.Conversation
        with self.session():
            found = Conversation.get_or_none(Conversation.participant_key == key)
            if found is not None:
                return found.id, False
            conversation_id = new_id("c")
            try:
                with self.dialect.write_transaction():
                    Conversation.insert(id=conversation_id, participant_key=key).execute()
                    self.models.Participant.insert_many(
                        [{"id": new_id("p"), "user_id": user, "conversation": conversation_id}
                         for user in sorted(user_ids)]
                    ).execute()
            except pw.IntegrityError:
                return Conversation.get(Conversation.participant_key == key).id, False
        self._participants.put(conversation_id, tuple(sorted(user_ids)))
        return conversation_id, True

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
        with self.session(keep_open=True):
            try:
                return self.dialect.insert_batch(batch)
            except pw.IntegrityError:
                # A concurrent writer elsewhere stored one of these clientMessageIds
                # first: redo one by one so only that request becomes a duplicate.
                return [self._insert_alone(message) for message in batch]

    def _insert_alone(self, message: NewMessage) -> StoreResult:
        try:
            return self.dialect.insert_batch([message])[0]
        except pw.IntegrityError:
            if message.client_message_id is not None:
                key = (message.sender_id, message.client_message_id)
                existing = self.dialect.existing_client_ids([message]).get(key)
                if existing is not None:
                    return existing
            raise
