"""Wire frames: parse and validate client frames, serialise server frames.

Pure functions and frozen dataclasses, no I/O. Each client frame type of the
contract has one dataclass; anything else raises :class:`InvalidJson` or
:class:`InvalidMessage` with a message a client developer can act on.

Version 2 (``sync``, ``mark_read``, ``requestId``) is additive: a frame of
version 1 parses and is answered exactly as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from tornchat.errors import InvalidJson, InvalidMessage

MAX_ID_LENGTH = 128
MAX_CLIENT_MESSAGE_ID_LENGTH = 64
MAX_REQUEST_ID_LENGTH = 64


@dataclass(frozen=True)
class Auth:
    token: object


@dataclass(frozen=True)
class SendMessage:
    content: str
    recipient_ids: tuple[str, ...] | None = None
    conversation_id: str | None = None
    client_message_id: str | None = None


@dataclass(frozen=True)
class Typing:
    conversation_id: str


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Refresh:
    """A new token for the same session (PROTOCOL §14)."""

    token: object


@dataclass(frozen=True)
class Sync:
    """Catch up: for each conversation, the highest ``seq`` the client has."""

    known: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class MarkRead:
    conversation_id: str
    seq: int


@dataclass(frozen=True)
class PresenceSubscribe:
    """Watch users' presence (PROTOCOL §13)."""

    user_ids: tuple[str, ...]


@dataclass(frozen=True)
class PresenceUnsubscribe:
    user_ids: tuple[str, ...]


ClientFrame = (Auth | SendMessage | Typing | Ping | Sync | MarkRead | Refresh
               | PresenceSubscribe | PresenceUnsubscribe)

#: user ids one ``presence_subscribe`` (or a presence lookup over HTTP) may name
MAX_PRESENCE_USERS_PER_REQUEST = 100


@dataclass(frozen=True)
class Limits:
    """The bounds a frame is checked against (from Settings)."""

    max_message_length: int = 4000
    max_recipients: int = 100
    max_sync_conversations: int = 200


def decode_object(text: str | bytes) -> dict[str, Any]:
    """Parse one frame into a JSON object or raise InvalidJson.

    orjson first (several times faster on every inbound frame); what it
    refuses but JSON allows (integers beyond 64 bits, lone surrogate escapes)
    gets a second opinion from the standard library, so the contract's notion
    of "valid JSON" does not depend on the fast path.
    """
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            data = json.loads(text)
        except ValueError:
            raise InvalidJson("Frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidJson("Frame must be a JSON object")
    return data


def parse_client_frame(data: dict[str, Any], limits: Limits) -> ClientFrame:
    """Validate a decoded object against the frame schemas of the contract."""
    kind = data.get("type")
    if not isinstance(kind, str):
        raise InvalidMessage("Field 'type' must be a string")
    if kind == "auth":
        return Auth(token=data.get("token"))
    if kind == "send_message":
        return _parse_send(data, limits)
    if kind == "typing":
        return Typing(conversation_id=_id_field(data, "conversationId"))
    if kind == "ping":
        return Ping()
    if kind == "sync":
        return _parse_sync(data, limits)
    if kind == "refresh":
        return Refresh(token=data.get("token"))
    if kind == "mark_read":
        return MarkRead(conversation_id=_id_field(data, "conversationId"),
                        seq=_seq_field(data, "seq"))
    if kind == "presence_subscribe":
        return PresenceSubscribe(parse_user_ids(data.get("userIds")))
    if kind == "presence_unsubscribe":
        return PresenceUnsubscribe(parse_user_ids(data.get("userIds")))
    raise InvalidMessage(f"Unknown message type {kind!r}")


def client_message_id_of(data: dict[str, Any]) -> str | None:
    """The echoable ``clientMessageId`` of a frame, if it has a valid one."""
    value = data.get("clientMessageId")
    if (isinstance(value, str) and 0 < len(value) <= MAX_CLIENT_MESSAGE_ID_LENGTH
            and value.isprintable()):
        return value
    return None


def request_id_of(data: dict[str, Any]) -> str | None:
    """The frame's ``requestId`` (echoed on its answer), None if it has none.

    Raises InvalidMessage for one that is not 1-64 printable characters: an
    id the server cannot echo faithfully is refused rather than dropped.
    """
    value = data.get("requestId")
    if value is None:
        return None
    if (isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID_LENGTH
            and value.isprintable()):
        return value
    raise InvalidMessage("Field 'requestId' must be a string of 1 to "
                         f"{MAX_REQUEST_ID_LENGTH} printable characters")


def is_id(value: object) -> bool:
    """An id: 1-128 printable characters (control characters could forge keys)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and value.isprintable()


def _is_storable(text: str) -> bool:
    """No NUL (PostgreSQL text refuses it) and no lone surrogate (not UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _id_field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not is_id(value):
        raise InvalidMessage(f"Field {name!r} must be a string of 1 to {MAX_ID_LENGTH} "
                             "printable characters")
    return value


def _is_seq(value: object) -> bool:
    return type(value) is int and 0 <= value < 2 ** 63


def _seq_field(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if not _is_seq(value):
        raise InvalidMessage(f"Field {name!r} must be a non-negative integer")
    return int(value)  # type: ignore[arg-type]


def _parse_sync(data: dict[str, Any], limits: Limits) -> Sync:
    known = data.get("conversations")
    if not isinstance(known, dict):
        raise InvalidMessage("Field 'conversations' must be an object of conversation id "
                             "to the highest seq the client has")
    if len(known) > limits.max_sync_conversations:
        raise InvalidMessage(f"Field 'conversations' has more than "
                             f"{limits.max_sync_conversations} entries")
    for conversation_id, seq in known.items():
        if not is_id(conversation_id):
            raise InvalidMessage(f"Every key of 'conversations' must be a conversation id "
                                 f"of 1 to {MAX_ID_LENGTH} printable characters")
        if not _is_seq(seq):
            raise InvalidMessage(f"'conversations'[{conversation_id!r}] must be a "
                                 "non-negative integer")
    return Sync(known=tuple(known.items()))


def _parse_send(data: dict[str, Any], limits: Limits) -> SendMessage:
    has_recipients = data.get("recipientIds") is not None
    has_conversation = data.get("conversationId") is not None
    if has_recipients == has_conversation:
        raise InvalidMessage("Give exactly one of 'recipientIds' or 'conversationId'")

    content = data.get("content")
    if not isinstance(content, str):
        raise InvalidMessage("Field 'content' must be a string")
    if not content.strip():
        raise InvalidMessage("Field 'content' must not be blank")
    if not _is_storable(content):
        raise InvalidMessage("Field 'content' must not contain NUL characters or unpaired "
                             "surrogates")
    if len(content) > limits.max_message_length:
        raise InvalidMessage(f"Field 'content' is longer than {limits.max_message_length} "
                             "characters")

    client_message_id = data.get("clientMessageId")
    if client_message_id is not None and client_message_id_of(data) is None:
        raise InvalidMessage("Field 'clientMessageId' must be a non-empty string of at most "
                             f"{MAX_CLIENT_MESSAGE_ID_LENGTH} characters")

    if has_conversation:
        return SendMessage(content=content, conversation_id=_id_field(data, "conversationId"),
                           client_message_id=client_message_id)

    return SendMessage(content=content,
                       recipient_ids=parse_recipients(data["recipientIds"], limits),
                       client_message_id=client_message_id)


def parse_recipients(recipients: object, limits: Limits) -> tuple[str, ...]:
    """A ``recipientIds`` value (of a send, or of the HTTP find-or-create)."""
    if not isinstance(recipients, list) or not recipients:
        raise InvalidMessage("Field 'recipientIds' must be a non-empty list of user ids")
    if len(recipients) > limits.max_recipients:
        raise InvalidMessage(f"Field 'recipientIds' has more than {limits.max_recipients} "
                             "entries")
    if not all(is_id(item) for item in recipients):
        raise InvalidMessage(f"Every entry of 'recipientIds' must be a string of 1 to "
                             f"{MAX_ID_LENGTH} printable characters")
    return tuple(recipients)


def parse_user_ids(user_ids: object) -> tuple[str, ...]:
    """A presence request's ``userIds``: 1 to 100 user ids, repeats dropped
    (first occurrence kept, so answers come in the order asked)."""
    if not isinstance(user_ids, list) or not user_ids:
        raise InvalidMessage("Field 'userIds' must be a non-empty list of user ids")
    if len(user_ids) > MAX_PRESENCE_USERS_PER_REQUEST:
        raise InvalidMessage(f"Field 'userIds' has more than "
                             f"{MAX_PRESENCE_USERS_PER_REQUEST} entries")
    if not all(is_id(item) for item in user_ids):
        raise InvalidMessage(f"Every entry of 'userIds' must be a string of 1 to "
                             f"{MAX_ID_LENGTH} printable characters")
    return tuple(dict.fromkeys(user_ids))


def encode(frame: dict[str, Any]) -> str:
    """Serialise a server frame compactly (orjson: no spaces, UTF-8 unescaped).

    A string orjson cannot encode as UTF-8 (a lone surrogate that came in as
    a JSON escape) is written as an ASCII escape again instead of failing.
    """
    try:
        return orjson.dumps(frame).decode()
    except TypeError:
        return json.dumps(frame, separators=(",", ":"))


def _answer(frame: dict[str, Any], request_id: str | None) -> str:
    """Encode the answer to a request, carrying its ``requestId`` if it had one."""
    if request_id is not None:
        frame["requestId"] = request_id
    return encode(frame)


def auth_success(user_id: str, connection_id: str, request_id: str | None = None,
                 expires_at: str | None = None) -> str:
    data = {"userId": user_id, "connectionId": connection_id}
    if expires_at is not None:
        data["expiresAt"] = expires_at
    return _answer({"type": "auth_success", "data": data}, request_id)


def refresh_success(expires_at: str, request_id: str | None) -> str:
    return _answer({"type": "refresh_success", "data": {"expiresAt": expires_at}}, request_id)


def auth_error(reason: str, request_id: str | None = None) -> str:
    return _answer({"type": "auth_error", "error": reason}, request_id)


def error(code: str, message: str, client_message_id: str | None = None,
          request_id: str | None = None) -> str:
    frame: dict[str, Any] = {"type": "error", "code": code, "error": message}
    if client_message_id is not None:
        frame["clientMessageId"] = client_message_id
    return _answer(frame, request_id)


def message_sent(message: dict[str, Any], client_message_id: str | None,
                 request_id: str | None = None) -> str:
    frame: dict[str, Any] = {"type": "message_sent", "data": message}
    if client_message_id is not None:
        frame["clientMessageId"] = client_message_id
    return _answer(frame, request_id)


def new_message(message: dict[str, Any]) -> str:
    return encode({"type": "new_message", "data": message})


def typing(conversation_id: str, user_id: str) -> str:
    return encode({"type": "typing", "data": {"conversationId": conversation_id,
                                              "userId": user_id}})


PONG = encode({"type": "pong"})


def pong(request_id: str | None) -> str:
    return PONG if request_id is None else _answer({"type": "pong"}, request_id)


def read(data: dict[str, Any], request_id: str | None = None) -> str:
    """``read``: a participant's read position moved (or, for the caller, is)."""
    return _answer({"type": "read", "data": data}, request_id)


def sync_done(conversations: list[dict[str, Any]], errors: list[dict[str, str]],
              request_id: str | None) -> str:
    return _answer({"type": "sync_done",
                    "data": {"conversations": conversations, "errors": errors}}, request_id)


def server_shutdown(reconnect_after_ms: int) -> str:
    return encode({"type": "server_shutdown", "data": {"reconnectAfterMs": reconnect_after_ms}})


def presence(data: dict[str, Any], request_id: str | None = None) -> str:
    """``presence``: a watched user's status, at subscription or on a change."""
    return _answer({"type": "presence", "data": data}, request_id)
