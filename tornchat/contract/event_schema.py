"""The Kafka events (contract sections 7 and 12), built at store time.

``MessageSent`` for every stored message, ``ConversationRead`` for every read
position a ``mark_read`` moved.

The event is serialised when the message is stored and kept verbatim in the
outbox, so its ``dedupeId`` is fixed once and every redelivery carries it.
It carries no ``seq``, so it can be built before the database numbers the
message (the whole batch then goes to PostgreSQL in one statement).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Protocol

import orjson

EVENT_TYPE = "MessageSent"
READ_EVENT_TYPE = "ConversationRead"
EVENT_VERSION = 1


class SentMessage(Protocol):
    """What the event tells of a message (a stored message or a store request)."""

    @property
    def conversation_id(self) -> str: ...

    @property
    def sender_id(self) -> str: ...

    @property
    def participants(self) -> tuple[str, ...]: ...

    @property
    def content(self) -> str: ...


def message_sent_event(message_id: str, message: SentMessage, timestamp: str, source: str,
                       dedupe_id: str) -> dict[str, Any]:
    """``timestamp``: the message's ``createdAt`` as it appears on the wire."""
    return {
        "eventType": EVENT_TYPE,
        "messageId": message_id,
        "conversationId": message.conversation_id,
        "senderId": message.sender_id,
        "recipientIds": [user for user in message.participants if user != message.sender_id],
        "content": message.content,
        "timestamp": timestamp,
        "dedupeId": dedupe_id,
        "source": source,
        "version": EVENT_VERSION,
    }


def conversation_read_event(conversation_id: str, user_id: str, last_read_seq: int,
                            timestamp: str, source: str, dedupe_id: str) -> dict[str, Any]:
    """``timestamp``: when the position moved (the ``read`` frame's ``readAt``)."""
    return {
        "eventType": READ_EVENT_TYPE,
        "conversationId": conversation_id,
        "userId": user_id,
        "lastReadSeq": last_read_seq,
        "timestamp": timestamp,
        "dedupeId": dedupe_id,
        "source": source,
        "version": EVENT_VERSION,
    }


def new_dedupe_id() -> str:
    return str(uuid.uuid4())


def encode_event(event: dict[str, Any]) -> str:
    """Compact JSON, non-ASCII kept as is: orjson on the write path of every
    message, the standard library for what orjson refuses (a lone surrogate,
    which the protocol layer already keeps out of stored content)."""
    try:
        return orjson.dumps(event).decode()
    except TypeError:
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False)
