"""Plain value objects passed between the store, the service and the wire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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
        """The ``MESSAGE`` object of the contract (built once; do not mutate).

        Remembered on the instance by hand: ``functools.cached_property``
        takes a lock per first access, which showed in a sync's replay of a
        thousand messages.
        """
        wire: dict[str, Any] | None = self.__dict__.get("_wire")
        if wire is None:
            wire = {
                "id": self.id,
                "conversationId": self.conversation_id,
                "senderId": self.sender_id,
                "content": self.content,
                "createdAt": to_iso(self.created_at),
                "seq": self.seq,
            }
            object.__setattr__(self, "_wire", wire)
        return wire

    @property
    def recipients(self) -> tuple[str, ...]:
        """Participants other than the sender."""
        return tuple(user for user in self.participants if user != self.sender_id)


def unread(last_seq: int, last_read_seq: int) -> int:
    """``unreadCount``: one subtraction (never below 0)."""
    return max(0, last_seq - last_read_seq)


@dataclass(frozen=True)
class ConversationView:
    """One conversation as one participant sees it (the ``CONVERSATION`` shape)."""

    id: str
    participants: tuple[str, ...]
    created_at: datetime
    last_message_at: datetime
    last_seq: int
    last_read_seq: int
    last_message: StoredMessage | None

    @property
    def unread_count(self) -> int:
        return unread(self.last_seq, self.last_read_seq)

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "participants": list(self.participants),
            "createdAt": to_iso(self.created_at),
            "lastMessageAt": to_iso(self.last_message_at),
            "lastSeq": self.last_seq,
            "lastReadSeq": self.last_read_seq,
            "unreadCount": self.unread_count,
            "lastMessage": None if self.last_message is None else self.last_message.to_wire(),
        }


@dataclass(frozen=True)
class MessagePage:
    """A contiguous, ascending run of a conversation's messages."""

    messages: tuple[StoredMessage, ...]
    has_more_before: bool
    has_more_after: bool
    last_seq: int

    def to_wire(self) -> dict[str, Any]:
        return {"messages": [message.to_wire() for message in self.messages],
                "hasMoreBefore": self.has_more_before, "hasMoreAfter": self.has_more_after,
                "lastSeq": self.last_seq}


@dataclass(frozen=True)
class ReadPosition:
    """A participant's read position after a ``mark_read`` (moved or not)."""

    conversation_id: str
    user_id: str
    participants: tuple[str, ...]
    last_read_seq: int
    last_seq: int
    read_at: datetime
    moved: bool

    @property
    def unread_count(self) -> int:
        return unread(self.last_seq, self.last_read_seq)

    def to_wire(self) -> dict[str, Any]:
        """The ``read`` frame's data, as every participant sees it."""
        return {"conversationId": self.conversation_id, "userId": self.user_id,
                "lastReadSeq": self.last_read_seq, "readAt": to_iso(self.read_at)}


@dataclass(frozen=True)
class SyncWindow:
    """What a ``sync`` replays of one conversation, and what it leaves out.

    ``messages`` are ``(known, last_seq]``, or only the newest of them when
    there were more than the replay allows; then ``missing_before_seq`` is the
    first replayed seq (the client fetches the rest over HTTP).
    """

    conversation_id: str
    known_seq: int
    messages: tuple[StoredMessage, ...]
    last_seq: int
    last_read_seq: int

    @property
    def complete(self) -> bool:
        return not self.messages or self.messages[0].seq <= self.known_seq + 1

    @property
    def missing_before_seq(self) -> int | None:
        return None if self.complete else self.messages[0].seq

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.conversation_id, "lastSeq": self.last_seq,
                "lastReadSeq": self.last_read_seq,
                "unreadCount": unread(self.last_seq, self.last_read_seq),
                "complete": self.complete, "missingBeforeSeq": self.missing_before_seq}


ONLINE, OFFLINE, UNKNOWN = "online", "offline", "unknown"


@dataclass(frozen=True)
class PresenceStatus:
    """One user's presence (PROTOCOL §13). ``last_seen_at`` (ISO) is when
    their last connection ended: set for ``offline`` when known, never for
    ``online`` or ``unknown``."""

    user_id: str
    status: str
    last_seen_at: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"userId": self.user_id, "status": self.status, "lastSeenAt": self.last_seen_at}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> PresenceStatus:
        return cls(data["userId"], data["status"], data.get("lastSeenAt"))
