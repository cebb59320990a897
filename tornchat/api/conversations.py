"""The user endpoints of ``/api/v1``: conversations, history, read positions.

Each handler authenticates the caller, parses and bounds its parameters, asks
the service and writes the answer; the rules (membership, clamping a read
position, what history a range means) live in the service and the store.
"""

from __future__ import annotations

from tornchat.api.base import ApiHandler
from tornchat.contract import protocol
from tornchat.errors import InvalidRequest

MAX_LIST_LIMIT, DEFAULT_LIST_LIMIT = 100, 20
MAX_HISTORY_LIMIT, DEFAULT_HISTORY_LIMIT = 200, 50
_SEQ_MAX = 2 ** 63 - 1


class ConversationsHandler(ApiHandler):
    """``GET``: the caller's conversations, newest first. ``POST``: find or create."""

    async def get(self) -> None:
        user_id = self.user_id()
        limit = self.int_argument("limit", DEFAULT_LIST_LIMIT, 1, MAX_LIST_LIMIT)
        assert limit is not None
        cursor = self.get_query_argument("cursor", None)
        views, next_cursor = await self.context.service.conversations(user_id, limit, cursor)
        self.send_json({"conversations": [view.to_wire() for view in views],
                        "nextCursor": next_cursor})

    async def post(self) -> None:
        user_id = self.user_id()
        # checked like a send's (an InvalidMessage answers 400 invalid_request)
        recipients = protocol.parse_recipients(self.json_body().get("recipientIds"),
                                               self.context.limits)
        view, created = await self.context.service.open_conversation(user_id, recipients)
        self.send_json(view.to_wire(), 201 if created else 200)


class ConversationHandler(ApiHandler):
    """``GET``: one conversation of the caller's."""

    async def get(self, conversation_id: str) -> None:
        user_id = self.user_id()
        view = await self.context.service.conversation(user_id,
                                                       self.conversation_id(conversation_id))
        self.send_json(view.to_wire())


class MessagesHandler(ApiHandler):
    """``GET``: a contiguous, ascending page of history (bounds exclusive)."""

    async def get(self, conversation_id: str) -> None:
        user_id = self.user_id()
        limit = self.int_argument("limit", DEFAULT_HISTORY_LIMIT, 1, MAX_HISTORY_LIMIT)
        assert limit is not None
        before = self.int_argument("beforeSeq", None, 0, _SEQ_MAX)
        after = self.int_argument("afterSeq", None, 0, _SEQ_MAX)
        page = await self.context.service.messages(
            user_id, self.conversation_id(conversation_id), limit, before, after)
        self.send_json(page.to_wire())


class ReadHandler(ApiHandler):
    """``POST``: move the caller's read position (the HTTP twin of ``mark_read``)."""

    async def post(self, conversation_id: str) -> None:
        user_id = self.user_id()
        seq = self.json_body().get("seq")
        if type(seq) is not int or not 0 <= seq <= _SEQ_MAX:
            raise InvalidRequest("'seq' must be a non-negative integer")
        position = await self.context.service.mark_read(
            user_id, self.conversation_id(conversation_id), seq)
        self.send_json({"lastReadSeq": position.last_read_seq,
                        "unreadCount": position.unread_count})
