"""Read positions: ``mark_read`` moves a participant's ``last_read_seq``.

The stored position becomes ``max(old, min(seq, last_seq))``: it never moves
backwards nor past the conversation's newest message. A move and its
``ConversationRead`` outbox event commit in one transaction, so the event is
published at least once (with a fixed ``dedupeId``) exactly when the
position moved; a request that moves nothing writes nothing. (A sender's own
message moves its position inside the message's batch: see
:mod:`~tornchat.storage.dialect`.)

The participant row is locked for the transaction (PostgreSQL ``FOR
UPDATE``; SQLite's one writer), and nothing else: a concurrent batch holds its
conversation row lock and then waits for this row at most, so the two cannot
deadlock. Thread rule: blocking; runs on the store's executor.
"""

from __future__ import annotations

from tornchat.contract.event_schema import (
    conversation_read_event,
    encode_event,
    new_dedupe_id,
)
from tornchat.contract.ids import new_id
from tornchat.contract.records import ReadPosition
from tornchat.contract.timefmt import to_iso, utc_now_ms
from tornchat.storage.dialect import OUTBOX_INSERT
from tornchat.storage.store import ChatStore


class ReadPositions:
    def __init__(self, store: ChatStore, event_source: str = "chat-service") -> None:
        self._store = store
        self._event_source = event_source

    def mark_read(self, user_id: str, conversation_id: str, seq: int) -> ReadPosition:
        """Move the user's read position towards ``seq``; the position after it."""
        store = self._store
        database = store.database
        p = database.param
        with store.session():
            participants = store.member_participants(conversation_id, user_id)
            with store.dialect.write_transaction():
                [(old, read_at, last_seq)] = database.execute_sql(
                    "SELECT p.last_read_seq, p.last_read_at, c.last_seq FROM participant AS p "
                    "JOIN conversation AS c ON c.id = p.conversation_id "
                    f"WHERE p.conversation_id = {p} AND p.user_id = {p}"
                    + store.dialect.lock_rows_of("p"),
                    (conversation_id, user_id)).fetchall()
                new = max(old, min(seq, last_seq))
                moved = new > old
                if moved:
                    read_at = utc_now_ms()
                    database.execute_sql(
                        f"UPDATE participant SET last_read_seq = {p}, last_read_at = {p} "
                        f"WHERE conversation_id = {p} AND user_id = {p}",
                        (new, read_at, conversation_id, user_id))
                    dedupe_id = new_dedupe_id()
                    payload = encode_event(conversation_read_event(
                        conversation_id, user_id, new, to_iso(read_at), self._event_source,
                        dedupe_id))
                    database.execute_sql(
                        f"{OUTBOX_INSERT} VALUES ({', '.join([p] * 6)})",
                        (new_id("read"), conversation_id, dedupe_id, payload, read_at, 0))
        return ReadPosition(conversation_id=conversation_id, user_id=user_id,
                            participants=participants, last_read_seq=new, last_seq=last_seq,
                            read_at=store.dialect.timestamp(read_at), moved=moved)
