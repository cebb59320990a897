"""The chat rules: who may send where, store then publish then acknowledge,
typing.

:meth:`ChatService.send` is the one owner of the send path: it stores the
message (the group-commit writer), publishes it to the bus only after the
store has committed, so a ``message_sent`` or ``new_message`` never describes
an uncommitted message, then hands the stored message to the caller's
``reply``, and counts the send as in flight from the first step to the last
(drain waits for it). It refuses new sends once the process drains.

No Tornado here. Thread rule: IOLoop thread; blocking store calls run on the
executor, the writer on its own thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from tornchat.contract import protocol
from tornchat.contract.records import StoredMessage
from tornchat.errors import InvalidMessage, Unavailable
from tornchat.fanout.bus import MESSAGE, TYPING, Bus, Delivery
from tornchat.metrics import Metrics
from tornchat.storage.store import ChatStore, NewMessage, require_member
from tornchat.storage.writer import GroupCommitWriter

R = TypeVar("R")

#: what the caller is told of a send: the stored message, or why it failed
Reply = Callable[[StoredMessage | Exception], None]


class ChatService:
    def __init__(self, store: ChatStore, bus: Bus, executor: Executor,
                 writer: GroupCommitWriter, metrics: Metrics) -> None:
        self._store = store
        self._bus = bus
        self._executor = executor
        self._writer = writer
        self._metrics = metrics
        self._inflight = 0
        self._accepting = True

    @property
    def inflight(self) -> int:
        """Sends accepted and not yet answered."""
        return self._inflight

    def stop_accepting(self) -> None:
        """Drain: every later send fails with Unavailable (nothing stored)."""
        self._accepting = False

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

    # -- sending ---------------------------------------------------------

    def send(self, sender_id: str, connection_id: str, request: protocol.SendMessage,
             reply: Reply) -> asyncio.Future[None]:
        """Store, then publish, then ``reply``; the future is done after ``reply``.

        Errors found before anything is queued (draining, not a participant
        of a cached conversation) raise here; later ones reach ``reply``. A
        retried ``clientMessageId`` gets the original message, published
        again: receivers drop the repeat by ``seq``, and a fan-out lost to a
        crash between commit and publish is completed.

        A send to a conversation whose participants are cached (nearly every
        send) completes through callbacks on the writer's future: no task and
        no coroutine chain per message. Only a conversation's first send
        (finding it, or loading its participants) runs a coroutine.
        """
        if not self._accepting:
            raise Unavailable("Server is shutting down; nothing was stored, retry on reconnect")
        new = self._cached_request(sender_id, request)
        stored = (self._writer.submit(new) if new is not None
                  else asyncio.ensure_future(self._store_uncached(sender_id, request)))
        self._inflight += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        stored.add_done_callback(functools.partial(self._on_stored, connection_id, reply, done))
        return done

    def _cached_request(self, sender_id: str,
                        request: protocol.SendMessage) -> NewMessage | None:
        """The store request for a send to a conversation whose participants
        are cached (no I/O; Forbidden for a non-member); None when finding
        them needs the database."""
        if request.conversation_id is None:
            return None
        cached = self._store.cached_participants(request.conversation_id)
        if cached is None:
            return None
        return NewMessage(sender_id, request.conversation_id, require_member(cached, sender_id),
                          request.content, request.client_message_id)

    async def _store_uncached(self, sender_id: str,
                              request: protocol.SendMessage) -> StoredMessage:
        if request.conversation_id is not None:
            conversation_id = request.conversation_id
        else:
            users = frozenset(request.recipient_ids or ()) | {sender_id}
            if len(users) < 2:
                raise InvalidMessage("'recipientIds' must name at least one user other than "
                                     "the sender")
            conversation_id = await self._run(self._store.find_or_create_conversation, users)
        participants = await self._members(conversation_id, sender_id)
        return await self._writer.store(NewMessage(sender_id, conversation_id, participants,
                                                   request.content,
                                                   request.client_message_id))

    def _on_stored(self, connection_id: str, reply: Reply, done: asyncio.Future[None],
                   stored: asyncio.Future[StoredMessage]) -> None:
        """The store's answer: publish, count, reply; the send is no longer in
        flight only once its reply is written (drain closes sockets after)."""
        try:
            try:
                message = stored.result()
                self._publish(message, connection_id)
            except Exception as exc:
                reply(exc)
                return
            self._metrics.messages_sent.inc()
            reply(message)
        finally:
            self._inflight -= 1
            if not done.done():
                done.set_result(None)

    def _publish(self, message: StoredMessage, connection_id: str) -> None:
        """Fan a committed message out (the sending connection excluded)."""
        self._bus.publish_nowait(Delivery(
            kind=MESSAGE,
            conversation_id=message.conversation_id,
            user_ids=message.participants,
            frame=protocol.new_message(message.to_wire()),
            exclude_connection=connection_id,
            seq=message.seq,
        ))

    # -- typing ----------------------------------------------------------

    async def typing(self, user_id: str, conversation_id: str) -> None:
        participants = await self._members(conversation_id, user_id)
        others = tuple(user for user in participants if user != user_id)
        await self._bus.publish(Delivery(
            kind=TYPING,
            conversation_id=conversation_id,
            user_ids=others,
            frame=protocol.typing(conversation_id, user_id),
        ))
