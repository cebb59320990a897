"""The chat rules: who may send where, store-then-publish, typing.

No Tornado here: the service runs blocking store calls on its executor via
``asyncio`` and publishes to the bus only after the store has committed, so a
``message_sent`` or ``new_message`` never describes an uncommitted message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from tornchat import protocol
from tornchat.bus import MESSAGE, TYPING, Bus, Delivery
from tornchat.errors import InvalidMessage, Unavailable
from tornchat.records import StoredMessage
from tornchat.store import ChatStore, NewMessage, require_member
from tornchat.writer import GroupCommitWriter

R = TypeVar("R")


class ChatService:
    def __init__(self, store: ChatStore, bus: Bus, executor: Executor,
                 writer: GroupCommitWriter) -> None:
        self._store = store
        self._bus = bus
        self._executor = executor
        self._writer = writer

    async def _run(self, fn: Callable[..., R], *args: object) -> R:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except RuntimeError as exc:  # executor shut down during drain
            raise Unavailable("Server is shutting down; nothing was stored") from exc

    async def _members(self, conversation_id: str, user_id: str) -> tuple[str, ...]:
        """Participants of a conversation the user belongs to; the cache is read
        on the loop, and only a miss costs a trip to the executor."""
        cached = self._store.cached_participants(conversation_id)
        if cached is None:
            return await self._run(self._store.member_participants, conversation_id, user_id)
        return require_member(cached, user_id)

    async def send_message(self, sender_id: str, connection_id: str,
                           request: protocol.SendMessage) -> StoredMessage:
        """Store the message, then fan it out; duplicates are re-published.

        A retried ``clientMessageId`` returns the original message and is
        published again: receivers drop the repeat by ``seq``, and a fan-out
        lost to a crash between commit and publish is completed.
        """
        if request.conversation_id is not None:
            conversation_id = request.conversation_id
        else:
            users = frozenset(request.recipient_ids or ()) | {sender_id}
            if len(users) < 2:
                raise InvalidMessage("'recipientIds' must name at least one user other than "
                                     "the sender")
            conversation_id = await self._run(self._store.find_or_create_conversation, users)
        participants = await self._members(conversation_id, sender_id)
        message = await self._writer.store(NewMessage(sender_id, conversation_id, participants,
                                                      request.content,
                                                      request.client_message_id))
        self.publish_stored(message, connection_id)
        return message

    def cached_request(self, sender_id: str,
                       request: protocol.SendMessage) -> NewMessage | None:
        """The store request for a send to a conversation whose participants
        are cached (no I/O, so the IOLoop may call it; Forbidden for a
        non-member); None when finding them needs the database."""
        if request.conversation_id is None:
            return None
        cached = self._store.cached_participants(request.conversation_id)
        if cached is None:
            return None
        return NewMessage(sender_id, request.conversation_id, require_member(cached, sender_id),
                          request.content, request.client_message_id)

    def submit(self, request: NewMessage) -> asyncio.Future[StoredMessage]:
        """Queue ``request`` for the writer; then :meth:`publish_stored` its result."""
        return self._writer.submit(request)

    def publish_stored(self, message: StoredMessage, connection_id: str) -> None:
        """Fan a committed message out (the sending connection excluded)."""
        self._bus.publish_nowait(Delivery(
            kind=MESSAGE,
            conversation_id=message.conversation_id,
            user_ids=message.participants,
            frame=protocol.new_message(message.to_wire()),
            exclude_connection=connection_id,
            seq=message.seq,
        ))

    async def typing(self, user_id: str, conversation_id: str) -> None:
        participants = await self._members(conversation_id, user_id)
        others = tuple(user for user in participants if user != user_id)
        await self._bus.publish(Delivery(
            kind=TYPING,
            conversation_id=conversation_id,
            user_ids=others,
            frame=protocol.typing(conversation_id, user_id),
        ))
