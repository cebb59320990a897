"""The chat rules: who may send where, store then publish then acknowledge,
typing, what a user may read back, read positions, and whose presence a
user may see (those who share a conversation with them).

:meth:`ChatService.send` is the one owner of the send path: it stores the
message (the group-commit writer), publishes it to the bus only after the
store has committed, so a ``message_sent`` or ``new_message`` never describes
an uncommitted message (to this process's connections on the IOLoop, to the
other processes from the writer thread, see :mod:`tornchat.fanout.bus`), then
hands the stored message to the caller's ``reply``, and counts the send as in
flight from the first step to the last (drain waits for it). It refuses new
sends once the process drains. :meth:`ChatService.mark_read`
owns the read rule the same way: store the move, then tell every
participant's connections. Reads (conversation list, history, a ``sync``'s
windows) check membership in the store and never write.

No Tornado here. Thread rule: IOLoop thread; blocking store calls run on the
executor, the writer on its own thread (where ``_publish_committed`` runs).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from typing import TypeVar

from tornchat.contract import protocol
from tornchat.contract.records import (
    UNKNOWN,
    ConversationView,
    MessagePage,
    PresenceStatus,
    ReadPosition,
    StoredMessage,
    SyncWindow,
)
from tornchat.errors import InvalidMessage, Unavailable
from tornchat.fanout.bus import DISCONNECT, MESSAGE, READ, TYPING, Bus, Delivery
from tornchat.fanout.presence import Presence
from tornchat.fanout.registry import Connection
from tornchat.fanout.slots import ConnectionSlots
from tornchat.metrics import Metrics
from tornchat.storage.reads import ConversationReads
from tornchat.storage.readstate import ReadPositions
from tornchat.storage.store import ChatStore, NewMessage, require_member
from tornchat.storage.writer import GroupCommitWriter

R = TypeVar("R")
log = logging.getLogger(__name__)

#: what the caller is told of a send: the stored message, or why it failed
Reply = Callable[[StoredMessage | Exception], None]


class ChatService:
    def __init__(self, store: ChatStore, bus: Bus, executor: Executor,
                 writer: GroupCommitWriter, metrics: Metrics, slots: ConnectionSlots,
                 presence: Presence, event_source: str = "chat-service") -> None:
        self._store = store
        self._slots = slots
        self._presence = presence
        self._reads = ConversationReads(store)
        self._positions = ReadPositions(store, event_source)
        self._bus = bus
        self._executor = executor
        self._writer = writer
        self._metrics = metrics
        self._inflight = 0
        self._accepting = True
        self._read_positions = PublishedReads()
        if bus.crosses_processes:
            writer.on_committed(self._publish_committed)

    @property
    def inflight(self) -> int:
        """Sends accepted and not yet answered."""
        return self._inflight

    def stop_accepting(self) -> None:
        """Drain: every later send fails with Unavailable (nothing stored)."""
        self._accepting = False

    async def _run(self, fn: Callable[..., R], *args: object) -> R:
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except RuntimeError as exc:  # the executor was shut down: the process drains
            raise Unavailable("Server is shutting down; nothing was stored") from exc
        return await future

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
            conversation_id, _ = await self._find_or_create(sender_id,
                                                            request.recipient_ids or ())
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
            except asyncio.CancelledError:  # the uncached task, cancelled at shutdown
                self._reply(reply, Unavailable("Server is shutting down; retry on reconnect"))
                return
            except Exception as exc:
                self._reply(reply, exc)
                return
            self._metrics.messages_sent.inc()
            self._reply(reply, message)
        finally:
            self._inflight -= 1
            if not done.done():
                done.set_result(None)

    @staticmethod
    def _reply(reply: Reply, outcome: StoredMessage | Exception) -> None:
        """Answer the caller; a failure while answering becomes its error reply."""
        try:
            reply(outcome)
        except Exception as exc:
            if isinstance(outcome, Exception):
                log.exception("answering a failed send failed", exc_info=exc)
                return
            reply(exc)

    def _publish(self, message: StoredMessage, connection_id: str) -> None:
        """Deliver a committed message to this process's connections (the
        sending one excluded); the writer thread has sent it to the others."""
        self._bus.deliver_local(_message_delivery(message, connection_id))

    def _publish_committed(self, messages: Sequence[StoredMessage]) -> None:
        """On the writer thread: a committed batch, to the other processes."""
        self._bus.publish_committed([_message_delivery(message, None) for message in messages])

    async def _find_or_create(self, user_id: str, recipient_ids: tuple[str, ...]
                              ) -> tuple[str, bool]:
        users = frozenset(recipient_ids) | {user_id}
        if len(users) < 2:
            raise InvalidMessage("'recipientIds' must name at least one user other than "
                                 "the sender")
        return await self._run(self._store.find_or_create, users)

    async def post_as(self, sender_id: str, request: protocol.SendMessage) -> StoredMessage:
        """A send on behalf of ``sender_id`` (the server API): the same store,
        outbox and fan-out as a socket send, with no connection left out, so
        the sender's own connections get it too."""
        outcome: list[StoredMessage | Exception] = []
        await self.send(sender_id, "", request, outcome.append)
        [result] = outcome
        if isinstance(result, Exception):
            raise result
        return result

    async def disconnect(self, user_id: str) -> int:
        """End every live connection of the user, cluster-wide (close 4003);
        returns how many live connections the connection slots knew of just
        before it was sent (cluster-wide with Redis, this worker's without)."""
        live = await self._slots.count(user_id)  # first: the closes free the slots
        self._bus.publish_nowait(Delivery(
            kind=DISCONNECT, conversation_id="", user_ids=(user_id,),
            frame=protocol.auth_error("Disconnected by server")))
        log.info("server API disconnect", extra={"userId": user_id, "closed": live})
        return live

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

    # -- presence --------------------------------------------------------

    async def watch_presence(self, user_id: str, connection: Connection,
                             user_ids: tuple[str, ...]) -> list[PresenceStatus]:
        """Subscribe a connection to users' presence, answering each one's
        status; who shares no conversation with the caller is ``unknown``,
        decided here once for the subscription and never watched."""
        return await self._visible(user_id, user_ids,
                                   functools.partial(self._presence.watch, connection))

    def unwatch_presence(self, connection: Connection, user_ids: tuple[str, ...]) -> None:
        self._presence.unwatch(connection, user_ids)

    def forget_presence(self, connection: Connection) -> None:
        """The connection ended (or did while it subscribed): it watches no one."""
        self._presence.forget(connection)

    async def presence_of(self, user_id: str, user_ids: tuple[str, ...]
                          ) -> list[PresenceStatus]:
        """The users' statuses now, by the same rule as a subscription (HTTP)."""
        return await self._visible(user_id, user_ids, self._presence.lookup)

    async def _visible(self, user_id: str, user_ids: tuple[str, ...],
                       read: Callable[[list[str]], Awaitable[list[PresenceStatus]]]
                       ) -> list[PresenceStatus]:
        """``read``'s statuses of the users the caller shares a conversation
        with, ``unknown`` for the rest, in the order asked."""
        contacts = await self._run(self._reads.contacts, user_id, user_ids)
        allowed = [user for user in user_ids if user in contacts]
        found = {status.user_id: status for status in (await read(allowed) if allowed else [])}
        return [found.get(user) or PresenceStatus(user, UNKNOWN) for user in user_ids]

    # -- reading back ----------------------------------------------------

    async def conversations(self, user_id: str, limit: int, cursor: str | None
                            ) -> tuple[list[ConversationView], str | None]:
        return await self._run(self._reads.conversations, user_id, limit, cursor)

    async def conversation(self, user_id: str, conversation_id: str) -> ConversationView:
        return await self._run(self._reads.conversation, user_id, conversation_id)

    async def open_conversation(self, user_id: str, recipient_ids: tuple[str, ...]
                                ) -> tuple[ConversationView, bool]:
        """Find or create the conversation of exactly the user and recipients,
        sending nothing; True if it was created now."""
        conversation_id, created = await self._find_or_create(user_id, recipient_ids)
        return await self.conversation(user_id, conversation_id), created

    async def messages(self, user_id: str, conversation_id: str, limit: int,
                       before: int | None, after: int | None) -> MessagePage:
        return await self._run(self._reads.messages, user_id, conversation_id, limit,
                               before, after)

    async def sync_windows(self, user_id: str, known: tuple[tuple[str, int], ...],
                           max_replay: int) -> tuple[list[SyncWindow], list[tuple[str, str]]]:
        return await self._run(self._reads.sync_windows, user_id, known, max_replay)

    # -- read positions --------------------------------------------------

    async def mark_read(self, user_id: str, conversation_id: str, seq: int,
                        connection_id: str | None = None) -> ReadPosition:
        """Store the move, then tell every participant's live connections.

        The calling connection (``connection_id``; None over HTTP) is left
        out: the caller answers it itself, with its ``requestId``. The
        reader's own other connections get ``unreadCount`` too; a request that
        moved nothing tells nobody else.
        """
        position = await self._run(self._positions.mark_read, user_id, conversation_id, seq)
        if position.moved and self._read_positions.newer(conversation_id, user_id,
                                                         position.last_read_seq):
            data = position.to_wire()
            others = tuple(user for user in position.participants if user != user_id)
            if others:
                self._bus.publish_nowait(Delivery(
                    kind=READ, conversation_id=conversation_id, user_ids=others,
                    frame=protocol.read(data)))
            self._bus.publish_nowait(Delivery(
                kind=READ, conversation_id=conversation_id, user_ids=(user_id,),
                frame=protocol.read({**data, "unreadCount": position.unread_count}),
                exclude_connection=connection_id))
        return position


def _message_delivery(message: StoredMessage, exclude_connection: str | None) -> Delivery:
    return Delivery(kind=MESSAGE, conversation_id=message.conversation_id,
                    user_ids=message.participants, frame=_new_message_frame(message),
                    exclude_connection=exclude_connection, seq=message.seq)


def _new_message_frame(message: StoredMessage) -> str:
    """The ``new_message`` frame, built once per message by whichever of the
    writer thread (for the other workers) and the IOLoop (for this one's
    connections) gets there first; remembered on the instance as
    :meth:`StoredMessage.to_wire` is (a race only builds it twice)."""
    frame: str | None = message.__dict__.get("_frame")
    if frame is None:
        frame = protocol.new_message(message.to_wire())
        object.__setattr__(message, "_frame", frame)
    return frame


class PublishedReads:
    """The newest read position this process announced, per (conversation,
    user): two moves by the same user commit in one order on the executor's
    threads and may finish in the other, and the older one must not be
    announced after the newer (a position only moves forward). Bounded: the
    least recently moved go first. IOLoop thread only."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._newest: OrderedDict[tuple[str, str], int] = OrderedDict()

    def newer(self, conversation_id: str, user_id: str, seq: int) -> bool:
        """True (and remembered) if ``seq`` is past what was announced before."""
        key = (conversation_id, user_id)
        if self._newest.get(key, -1) >= seq:
            return False
        self._newest[key] = seq
        self._newest.move_to_end(key)
        if len(self._newest) > self._capacity:
            self._newest.popitem(last=False)
        return True
