"""The ``MessageSent`` Kafka event (contract section 7), built at store time.

The event is serialised when the message is stored and kept verbatim in the
outbox, so its ``dedupeId`` is fixed once and every redelivery carries it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tornchat.records import StoredMessage
from tornchat.timefmt import to_iso

EVENT_TYPE = "MessageSent"
EVENT_VERSION = 1


def message_sent_event(message: StoredMessage, source: str, dedupe_id: str) -> dict[str, Any]:
    return {
        "eventType": EVENT_TYPE,
        "messageId": message.id,
        "conversationId": message.conversation_id,
        "senderId": message.sender_id,
        "recipientIds": list(message.recipients),
        "content": message.content,
        "timestamp": to_iso(message.created_at),
        "dedupeId": dedupe_id,
        "source": source,
        "version": EVENT_VERSION,
    }


def new_dedupe_id() -> str:
    return str(uuid.uuid4())


def encode_event(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)
