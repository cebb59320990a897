"""Plain value objects passed between the store, the service and the wire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from tornchat.contract.timefmt import to_iso


@dataclass(frozen=True)
class StoredMessage:
    """A committed message, with its conversation's participants."""

    id: str
    conversation_id: str
    sender_id: str
    content: str
    created_at: datetime
    seq: int
    participants: tuple[str, ...]
    client_message_id: str | None = None
    duplicate: bool = False

    def to_wire(self) -> dict[str, Any]:
        """The ``MESSAGE`` object of the contract (built once; do not mutate)."""
        return self._wire

    @cached_property
    def _wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conversationId": self.conversation_id,
            "senderId": self.sender_id,
            "content": self.content,
            "createdAt": to_iso(self.created_at),
            "seq": self.seq,
        }

    @property
    def recipients(self) -> tuple[str, ...]:
        """Participants other than the sender."""
        return tuple(user for user in self.participants if user != self.sender_id)
