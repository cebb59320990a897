"""The WebSocket handler: framing and the protocol state machine only.

Each frame is decoded, validated (:mod:`tornchat.contract.protocol`) and
handed to the service; chat rules live in :mod:`tornchat.service`, and the
handler parses, calls, and writes the answer, with the frame's ``requestId``.
What a connection was given, and the live messages it holds back while a
``sync`` replays, are :mod:`tornchat.ws.replay`'s. It sees the rest of the
process through a :class:`~tornchat.ws.context.SocketContext`. Thread rule:
IOLoop thread only. Any exception while handling a frame becomes an
``error`` frame; the socket stays open unless the contract says to close it
(auth failures, oversized frames).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, cast

from tornado.httputil import HTTPHeaders
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream
from tornado.websocket import WebSocketHandler, WebSocketProtocol

from tornchat.contract import protocol
from tornchat.contract.ids import new_id
from tornchat.contract.records import StoredMessage, SyncWindow
from tornchat.contract.timefmt import from_epoch, to_iso
from tornchat.errors import (
    AlreadyAuthenticated,
    AuthError,
    ChatError,
    Forbidden,
    InvalidMessage,
    InvalidToken,
    RateLimited,
    SlowConsumer,
    Unavailable,
)
from tornchat.ws.context import SocketContext
from tornchat.ws.framereader import lean_protocol
from tornchat.ws.framewriter import PING_FRAME, drained, text_frame, write_frame
from tornchat.ws.leanconn import forget_http_connection, forget_request_headers, lighten_stream
from tornchat.ws.ratelimit import TokenBucket
from tornchat.ws.replay import DeliveryLog
from tornchat.ws.sessions import auth_deadline

log = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_DISCONNECTED = 4003
_Ids = tuple[str | None, str | None]  # a frame's (clientMessageId, requestId)
#: conversations of a sync read and written at a time (a sync may list 200, of
#: 100 messages each: written in parts, each once the socket took the last one)
_SYNC_PART = 25


def _ids_or_none(message: str | bytes) -> tuple[str | None, str | None]:
    """The (clientMessageId, requestId) of a frame that is not handled, if valid."""
    try:
        data = protocol.decode_object(message)
    except ChatError:
        return None, None
    try:
        request_id = protocol.request_id_of(data)
    except ChatError:
        request_id = None
    return protocol.client_message_id_of(data), request_id


def _by_size(frames: list[str], budget: int) -> list[list[str]]:
    """``frames`` in runs of about ``budget`` characters: a replay is written a
    run at a time, each once the socket took the last, so a long sync stays
    within the outbound bound of a client that reads."""
    runs: list[list[str]] = []
    size = budget
    for frame in frames:
        if size + len(frame) > budget:
            runs.append([])
            size = 0
        runs[-1].append(frame)
        size += len(frame)
    return runs


class ChatSocketHandler(WebSocketHandler):
    #: what this connection was given (:mod:`tornchat.ws.replay`); a class-level
    #: default, so a connection that never gets a message has no such attribute
    _delivered: DeliveryLog | None = None
    #: the token's ``exp`` (epoch seconds), set on authentication
    expires_at: float = 0.0

    def initialize(self, context: SocketContext) -> None:
        self.context = context
        self.connection_id = new_id("conn")
        self.user_id: str | None = None
        self.awaiting_pong = False
        #: once authenticated, the wait for the first frame (TORNCHAT_SYNC_HOLD)
        self._timer: object | None = None
        self._closed = False
        settings = context.settings
        self._bucket = TokenBucket(settings.rate_limit_per_second, settings.rate_limit_burst)

    # -- Tornado hooks ------------------------------------------------------

    def check_origin(self, origin: str) -> bool:
        return self.context.origin_allowed(origin, self.request.host)

    async def get(self, *args: Any, **kwargs: Any) -> None:
        """The upgrade, unless too many connections have not authenticated yet:
        then 503 with ``Retry-After`` before anything is kept for this one."""
        sessions = self.context.sessions
        if not sessions.admit(self.context.settings.max_pending_connections):
            self.set_status(503)
            self.set_header("Retry-After", "1")
            await self.finish("Too many connections waiting to authenticate; retry shortly\n")
            if self.request.connection is not None:  # no keep-alive: the socket goes too
                cast(Any, self.request.connection).close()
            return
        await super().get(*args, **kwargs)

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        """Tornado's protocol, reading frames with callbacks once open
        (:mod:`tornchat.ws.framereader`): no coroutine chain per connection."""
        return lean_protocol(super().get_websocket_protocol())

    def open(self, *args: Any, **kwargs: Any) -> None:
        sessions = self.context.sessions
        if not sessions.accepting:
            self.close(CLOSE_GOING_AWAY, "server shutting down")
            return
        sessions.opened(self, auth_deadline(self.context.settings.auth_timeout))
        self._forget_upgrade_state()

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        """Handle one frame; what needs waiting for comes back as an awaitable,
        and Tornado reads this connection's next frame only once it is done.

        A send to a conversation whose participants are cached (nearly every
        send) returns a plain future that the writer's result completes: no
        task and no coroutine chain per message. The rest (auth, typing, a
        first send to a conversation) runs as a coroutine.
        """
        if self._closed:  # ended by the server (auth error, expiry, disconnect): ignored
            return None
        ids: _Ids = (None, None)
        try:
            if not self._bucket.take():  # first: every frame counts, even bad ones
                ids = _ids_or_none(message)
                raise RateLimited("Too many messages; slow down")
            if isinstance(message, bytes):
                raise InvalidMessage("Binary frames are not supported; send JSON text")
            data = protocol.decode_object(message)
            ids = (protocol.client_message_id_of(data), None)
            if self.user_id is None and data.get("type") != "auth":
                raise AuthError("Not authenticated")
            ids = (ids[0], protocol.request_id_of(data))  # a bad requestId still echoes the other
            return self._handle(data, ids)
        except Exception as exc:
            self._report(exc, ids)
            return None

    def _report(self, exc: BaseException, ids: _Ids) -> None:
        """The outcome of a frame that failed: an error frame (or, for auth
        failures, a rejection and close), carrying the frame's ids."""
        if isinstance(exc, AuthError):
            self._reject(exc, ids[1])
        elif isinstance(exc, ChatError):
            if isinstance(exc, Unavailable):
                log.warning("request failed: %s", exc.message, extra=self._log_context())
            self.send(protocol.error(exc.code, exc.message, *ids))
        else:
            log.error("unexpected error while handling a frame", exc_info=exc,
                      extra=self._log_context())
            self.send(protocol.error("internal_error", "Internal server error", *ids))

    async def _guarded(self, work: Awaitable[None], ids: _Ids) -> None:
        try:
            await work
        except Exception as exc:
            self._report(exc, ids)

    def on_pong(self, data: bytes) -> None:
        self.awaiting_pong = False

    def on_close(self) -> None:
        self._closed = True
        self._cancel_timer()
        self.context.sessions.closed(self)

    # -- protocol -----------------------------------------------------------

    def _handle(self, data: dict[str, Any], ids: _Ids) -> Awaitable[None] | None:
        limits = self.context.limits
        if self.user_id is None:  # on_message let only an auth frame through
            return self._guarded(self._authenticate(protocol.parse_client_frame(data, limits),
                                                    ids[1]), ids)
        frame = protocol.parse_client_frame(data, limits)
        delivered = self._delivered
        if delivered is not None and delivered.holding_all:  # the first frame since auth
            self._release_held(frame)
        service = self.context.service
        if isinstance(frame, protocol.SendMessage):
            return self._send_message(frame, ids)
        if isinstance(frame, protocol.Ping):
            self.send(protocol.pong(ids[1]))
        elif isinstance(frame, protocol.Typing):
            return self._guarded(service.typing(self.user_id, frame.conversation_id), ids)
        elif isinstance(frame, protocol.MarkRead):
            return self._guarded(self._mark_read(frame, ids[1]), ids)
        elif isinstance(frame, protocol.Sync):
            self._delivery_log().begin(conversation_id for conversation_id, _ in frame.known)
            return self._guarded(self._sync(frame, ids[1]), ids)
        elif isinstance(frame, protocol.Refresh):
            self._refresh(frame, ids[1])
        elif isinstance(frame, protocol.PresenceSubscribe):
            return self._guarded(self._watch_presence(frame, ids[1]), ids)
        elif isinstance(frame, protocol.PresenceUnsubscribe):
            service.unwatch_presence(self, frame.user_ids)
        elif isinstance(frame, protocol.Auth):
            raise AlreadyAuthenticated("Connection is already authenticated")
        return None

    async def _authenticate(self, frame: protocol.ClientFrame, request_id: str | None) -> None:
        assert isinstance(frame, protocol.Auth)
        sessions = self.context.sessions
        sessions.auth_received(self)
        try:
            identity = self.context.verifier.identify(frame.token)
            expires_at = to_iso(from_epoch(identity.expires_at))
            await sessions.authenticate(self, identity)
        except Exception:
            # a failure that leaves the connection open (unavailable, internal
            # error) lets the client try again, within a new deadline; a
            # rejection closes it, and closing discards the deadline
            if not self._closed and self.user_id is None:
                sessions.awaiting_auth(self, auth_deadline(self.context.settings.auth_timeout))
            raise
        if self._closed:
            return
        user_id = identity.user_id
        # live messages wait for the first frame (a sync), or TORNCHAT_SYNC_HOLD
        self._delivery_log().hold_all()
        self._timer = IOLoop.current().call_later(self.context.settings.sync_hold,
                                                  self._release_held)
        self.send(protocol.auth_success(user_id, self.connection_id, request_id, expires_at))
        log.info("connection authenticated", extra=self._log_context())

    def _send_message(self, frame: protocol.SendMessage, ids: _Ids) -> Awaitable[None]:
        assert self.user_id is not None

        def reply(outcome: StoredMessage | Exception) -> None:
            if isinstance(outcome, StoredMessage):
                self._acknowledge(outcome, frame, ids[1])
            else:
                self._report(outcome, ids)

        return self.context.service.send(self.user_id, self.connection_id, frame, reply)

    def _refresh(self, frame: protocol.Refresh, request_id: str | None) -> None:
        """A new token of the same user: the session lasts until its ``exp``."""
        try:
            identity = self.context.verifier.identify(frame.token)
        except AuthError as exc:  # the session goes on to its old expiry
            raise InvalidToken(exc.reason) from None
        if identity.user_id != self.user_id:
            raise Forbidden("The token is for another user")
        answer = protocol.refresh_success(to_iso(from_epoch(identity.expires_at)), request_id)
        self.context.sessions.refresh(self, identity.expires_at)
        self.send(answer)

    async def _watch_presence(self, frame: protocol.PresenceSubscribe,
                              request_id: str | None) -> None:
        """One ``presence`` per user at once (with the ``requestId``); changes follow."""
        assert self.user_id is not None
        service = self.context.service
        try:
            statuses = await service.watch_presence(self.user_id, self, frame.user_ids)
        finally:
            if self._closed:  # it ended while the subscription was read
                service.forget_presence(self)
        if not self._closed:
            self._send_all([protocol.presence(status.to_wire(), request_id)
                            for status in statuses])

    def disconnect(self, frame: str) -> None:
        """The server API ended this user's sessions (close 4003)."""
        log.info("disconnected by the server API", extra=self._log_context())
        self._end(frame, CLOSE_DISCONNECTED, "Disconnected by server")

    def expire(self) -> None:
        """Called by the sessions' expiry wheel at the token's ``exp``."""
        log.info("token expired; closing", extra=self._log_context())
        self._end(protocol.auth_error("Token expired"), 4001, "Token expired")

    def _end(self, frame: str, code: int, reason: str) -> None:
        """Send the last frame and close; from now on the session is gone:
        frames still arriving are ignored (nothing is stored under an expired
        token or after a disconnect) and its slot is free at once."""
        if self._closed:
            return
        self.send(frame)
        self._close_now(code, reason)

    def _close_now(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.close(code, reason)
        self._cancel_timer()
        self.context.sessions.closed(self)

    def slow_consumer(self, exc: SlowConsumer | None = None) -> None:
        """The client stopped reading (PROTOCOL §14): close with 4008. What is
        queued stays queued for the close handshake's few seconds, nothing
        more is; the slot is free at once."""
        if self._closed:
            return
        log.warning("slow consumer: closing with 4008", extra={
            **self._log_context(), "unsent": str(exc) if exc else "pong"})
        self.context.sessions.slow_consumer(self)
        self._close_now(SlowConsumer.close_code, "Slow consumer")

    async def _mark_read(self, frame: protocol.MarkRead, request_id: str | None) -> None:
        assert self.user_id is not None
        position = await self.context.service.mark_read(
            self.user_id, frame.conversation_id, frame.seq, self.connection_id)
        self.send(protocol.read({**position.to_wire(), "unreadCount": position.unread_count},
                                request_id))

    async def _sync(self, frame: protocol.Sync, request_id: str | None) -> None:
        """Replay what the client missed (live messages of those conversations
        are held since :meth:`_handle` saw the frame), then release the held
        ones it did not get; ``sync_done`` last."""
        assert self.user_id is not None
        delivered = self._delivery_log()
        windows: list[SyncWindow] = []
        errors: list[tuple[str, str]] = []
        done: list[str] = []
        try:
            for start in range(0, len(frame.known), _SYNC_PART):
                part, failed = await self.context.service.sync_windows(
                    self.user_id, frame.known[start:start + _SYNC_PART],
                    self.context.settings.sync_max_replay)
                windows += part
                errors += failed
                replay = [protocol.new_message(message.to_wire())
                          for window in part for message in window.messages
                          if delivered.admit(message.conversation_id, message.seq)]
                for chunk in _by_size(replay, self.context.settings.max_outbound_bytes // 4):
                    self._send_all(chunk)  # what the socket takes, then the next
                    await drained(self.ws_connection)
                if self._closed:
                    return
            done.append(protocol.sync_done(
                [window.to_wire() for window in windows],
                [{"id": cid, "code": code} for cid, code in errors], request_id))
        finally:  # the held live messages it did not get, also after a failed read
            self._send_all(delivered.unseen(delivered.end()) + done)

    def deliver_message(self, frame: str, conversation_id: str, seq: int) -> bool:
        """A live ``new_message``: written unless this connection had it, or
        held while a sync of its conversation replays."""
        delivered = self._delivered
        if delivered is None:
            delivered = self._delivered = DeliveryLog()
        elif delivered.hold(conversation_id, seq, frame):
            return True
        return delivered.admit(conversation_id, seq) and self.send(frame)

    def _release_held(self, first: protocol.ClientFrame | None = None) -> None:
        """End the hold that began at authentication (see :mod:`tornchat.ws.replay`):
        the first frame came, or none in time."""
        self._cancel_timer()
        delivered = self._delivered
        if delivered is None:
            return
        syncing = ([conversation_id for conversation_id, _ in first.known]
                   if isinstance(first, protocol.Sync) else [])
        self._send_all(delivered.unseen(delivered.release_all(syncing)))
        if not delivered:  # nothing came meanwhile: an idle connection keeps no log
            del self._delivered

    def _delivery_log(self) -> DeliveryLog:
        if self._delivered is None:
            self._delivered = DeliveryLog()
        return self._delivered

    def _acknowledge(self, message: StoredMessage, frame: protocol.SendMessage,
                     request_id: str | None) -> None:
        self._delivery_log().admit(message.conversation_id, message.seq)
        self.send(protocol.message_sent(message.to_wire(), frame.client_message_id,
                                        request_id))
        if log.isEnabledFor(logging.DEBUG):  # per message: skip building the record
            log.debug("message stored", extra={**self._log_context(),
                                               "conversationId": message.conversation_id,
                                               "messageId": message.id, "seq": message.seq})

    # -- helpers ------------------------------------------------------------

    def _forget_upgrade_state(self) -> None:
        """Drop what only the HTTP upgrade needed: an idle connection should
        cost as little memory as possible (:mod:`tornchat.ws.leanconn`), and
        these are never read again."""
        forget_request_headers(self.request.headers)
        forget_http_connection(self.request)
        self._headers = HTTPHeaders()
        self.path_args = []
        self.path_kwargs = {}
        self.ui = None  # type: ignore[assignment]  # template helpers, a cycle to the handler
        if self.ws_connection is not None:
            lighten_stream(self.ws_connection.stream)

    def _detach_stream(self) -> IOStream:
        """Tornado's, minus planting seven "not supported for WebSockets"
        attributes on the instance: they grow its attribute dict from about
        0.3 to 1.6 KB for the life of the connection. This handler never
        calls ``write``/``finish``/``set_header`` after the upgrade."""
        return self.detach()

    def send(self, frame: str) -> bool:
        """Queue a text frame; False if the socket is closed. Never raises.

        The hot path of every delivery: the frame bytes are built once per
        fan-out (:class:`~tornchat.ws.framewriter.FrameCache`).
        """
        if self._closed:
            return False
        return self._write(self.context.frames.get(frame))

    def _send_all(self, frames: list[str]) -> bool:
        """Several text frames in one write (a sync's replay: one system call,
        not one per message)."""
        if self._closed or not frames:
            return False
        return self._write(b"".join(map(text_frame, frames)), exempt=True)

    def send_ping(self) -> bool:
        """The heartbeat's ping, as prebuilt bytes."""
        return self._write(PING_FRAME)

    def _write(self, data: bytes, exempt: bool = False) -> bool:
        """Frame bytes to the socket within the outbound bound (an ``exempt``
        answer may pass it, :func:`~tornchat.ws.framewriter.write_frame`);
        over it, the connection ends as a slow consumer. Never raises."""
        if self._closed:
            return False
        try:
            return write_frame(self.ws_connection, data,
                               self.context.settings.max_outbound_bytes, exempt)
        except SlowConsumer as exc:
            self.slow_consumer(exc)
            return False

    def terminate(self) -> None:
        """Drop a dead connection at once: no close handshake, no waiting."""
        self._closed = True
        self.context.sessions.closed(self)
        connection = self.ws_connection
        if connection is not None and connection.stream is not None:
            connection.stream.close()

    def _reject(self, exc: AuthError, request_id: str | None = None) -> None:
        log.info("authentication failed: %s", exc.reason, extra=self._log_context())
        self._end(protocol.auth_error(exc.reason, request_id), exc.close_code, exc.reason)

    def auth_timed_out(self) -> None:
        if self.user_id is None and not self._closed:
            self._reject(AuthError("Authentication timeout"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            IOLoop.current().remove_timeout(self._timer)
            self._timer = None

    def _log_context(self) -> dict[str, Any]:
        return {"connectionId": self.connection_id, "userId": self.user_id}
