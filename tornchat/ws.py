"""The WebSocket handler: framing and the protocol state machine only.

Each frame is decoded, validated (``protocol``) and routed to the service;
chat rules live in ``service``. Thread rule: IOLoop thread only. Any exception
while handling a frame becomes an ``error`` frame; the socket stays open
unless the contract says to close it (auth failures, oversized frames).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from tornado.httputil import HTTPHeaders
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketHandler, WebSocketProtocol

from tornchat import protocol
from tornchat.errors import (
    AlreadyAuthenticated,
    AuthError,
    ChatError,
    InvalidMessage,
    RateLimited,
    Unavailable,
)
from tornchat.framereader import lean_protocol
from tornchat.ids import new_id
from tornchat.leanconn import forget_request_headers, lighten_stream
from tornchat.ratelimit import TokenBucket
from tornchat.records import StoredMessage

if TYPE_CHECKING:
    from tornchat.app import ChatApplication

log = logging.getLogger("tornchat.ws")

CLOSE_GOING_AWAY = 1001
_FIN_TEXT = 0x81
_PING_FRAME = b"\x89\x00"  # FIN + ping, no payload, unmasked (server to client)


def text_frame(text: str) -> bytes:
    """The whole server-to-client WebSocket frame carrying ``text``.

    Unmasked, unfragmented and uncompressed (RFC 6455 section 5.2): servers
    never mask, and this handler never negotiates permessage-deflate
    (``get_compression_options`` stays None), so the bytes are the same for
    every recipient and can be built once per fan-out.
    """
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size <= 0xFFFF:
        return struct.pack("!BBH", _FIN_TEXT, 126, size) + payload
    return struct.pack("!BBQ", _FIN_TEXT, 127, size) + payload


class FrameCache:
    """Encode a fan-out frame once for all its recipients.

    The registry hands the very same ``str`` object to every recipient of a
    delivery in a row, so remembering the last one (by identity; the reference
    held here keeps the identity from being reused) saves the encoding and the
    framing for all recipients but the first.
    """

    __slots__ = ("frame", "text")

    def __init__(self) -> None:
        self.text: str | None = None
        self.frame = b""

    def get(self, text: str) -> bytes:
        if text is not self.text:
            self.frame = text_frame(text)
            self.text = text
        return self.frame


def _client_message_id_or_none(message: str | bytes) -> str | None:
    try:
        return protocol.client_message_id_of(protocol.decode_object(message))
    except ChatError:
        return None


class ChatSocketHandler(WebSocketHandler):
    def initialize(self, chat: ChatApplication) -> None:
        self.chat = chat
        self.connection_id = new_id("conn")
        self.user_id: str | None = None
        self.awaiting_pong = False
        self._auth_timer: object | None = None
        self._closed = False
        self._frames = chat.frame_cache
        self._bucket = TokenBucket(chat.settings.rate_limit_per_second,
                                   chat.settings.rate_limit_burst)

    # -- Tornado hooks ------------------------------------------------------

    def check_origin(self, origin: str) -> bool:
        return self.chat.origin_allowed(origin, self.request.host)

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        """Tornado's protocol, reading frames with callbacks once open
        (:mod:`tornchat.framereader`): no coroutine chain per connection."""
        return lean_protocol(super().get_websocket_protocol())

    def open(self, *args: Any, **kwargs: Any) -> None:
        if self.chat.draining:
            self.close(CLOSE_GOING_AWAY, "server shutting down")
            return
        self.chat.connection_opened(self)
        self._auth_timer = IOLoop.current().call_later(self.chat.settings.auth_timeout,
                                                       self._on_auth_timeout)
        self._forget_upgrade_state()

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        """Handle one frame; what needs waiting for comes back as an awaitable,
        and Tornado reads this connection's next frame only once it is done.

        A send to a conversation whose participants are cached (nearly every
        send) returns a plain future that the writer's result completes: no
        task and no coroutine chain per message. The rest (auth, typing, a
        first send to a conversation) runs as a coroutine.
        """
        client_message_id: str | None = None
        try:
            if not self._bucket.take():  # first: every frame counts, even bad ones
                client_message_id = _client_message_id_or_none(message)
                raise RateLimited("Too many messages; slow down")
            if isinstance(message, bytes):
                raise InvalidMessage("Binary frames are not supported; send JSON text")
            data = protocol.decode_object(message)
            client_message_id = protocol.client_message_id_of(data)
            return self._handle(data, client_message_id)
        except Exception as exc:
            self._report(exc, client_message_id)
            return None

    def _report(self, exc: BaseException, client_message_id: str | None) -> None:
        """The outcome of a frame that failed: an error frame (or, for auth
        failures, a rejection and close)."""
        if isinstance(exc, AuthError):
            self._reject(exc)
        elif isinstance(exc, ChatError):
            if isinstance(exc, Unavailable):
                log.warning("request failed: %s", exc.message, extra=self._log_context())
            self.send(protocol.error(exc.code, exc.message, client_message_id))
        else:
            log.error("unexpected error while handling a frame", exc_info=exc,
                      extra=self._log_context())
            self.send(protocol.error("internal_error", "Internal server error",
                                     client_message_id))

    async def _guarded(self, work: Awaitable[None], client_message_id: str | None) -> None:
        try:
            await work
        except Exception as exc:
            self._report(exc, client_message_id)

    def on_pong(self, data: bytes) -> None:
        self.awaiting_pong = False

    def on_close(self) -> None:
        self._closed = True
        self._cancel_auth_timer()
        self.chat.connection_closed(self)

    # -- protocol -----------------------------------------------------------

    def _handle(self, data: dict[str, Any], client_message_id: str | None
                ) -> Awaitable[None] | None:
        limits = self.chat.limits
        if self.user_id is None:
            if data.get("type") != "auth":
                raise AuthError("Not authenticated")
            return self._guarded(self._authenticate(protocol.parse_client_frame(data, limits)),
                                 client_message_id)
        frame = protocol.parse_client_frame(data, limits)
        if isinstance(frame, protocol.Auth):
            raise AlreadyAuthenticated("Connection is already authenticated")
        if isinstance(frame, protocol.Ping):
            self.send(protocol.PONG)
        elif isinstance(frame, protocol.SendMessage):
            return self._send_message(frame, client_message_id)
        elif isinstance(frame, protocol.Typing):
            return self._guarded(self.chat.service.typing(self.user_id, frame.conversation_id),
                                 client_message_id)
        return None

    async def _authenticate(self, frame: protocol.ClientFrame) -> None:
        assert isinstance(frame, protocol.Auth)
        self._cancel_auth_timer()
        user_id = self.chat.verifier.verify(frame.token)
        await self.chat.authenticate(self, user_id)
        if self._closed:
            return
        self.send(protocol.auth_success(user_id, self.connection_id))
        log.info("connection authenticated", extra=self._log_context())

    def _send_message(self, frame: protocol.SendMessage, client_message_id: str | None
                      ) -> Awaitable[None]:
        assert self.user_id is not None
        if self.chat.draining:
            raise Unavailable("Server is shutting down; nothing was stored, retry on reconnect")
        service = self.chat.service
        request = service.cached_request(self.user_id, frame)
        if request is None:  # the participants need the database: the coroutine way
            return self._guarded(self._send_uncached(frame), client_message_id)
        stored = service.submit(request)
        self.chat.send_started()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        stored.add_done_callback(
            lambda result: self._on_stored(result, frame, client_message_id, done))
        return done

    def _on_stored(self, result: asyncio.Future[StoredMessage], frame: protocol.SendMessage,
                   client_message_id: str | None, done: asyncio.Future[None]) -> None:
        """The writer's answer to a fast-path send: publish, acknowledge."""
        stored = False
        try:
            message = result.result()
            self.chat.service.publish_stored(message, self.connection_id)
            stored = True
            self._acknowledge(message, frame)
        except Exception as exc:
            self._report(exc, client_message_id)
        finally:
            self.chat.send_finished(stored)
            if not done.done():
                done.set_result(None)

    async def _send_uncached(self, frame: protocol.SendMessage) -> None:
        assert self.user_id is not None
        with self.chat.track_inflight():
            message = await self.chat.service.send_message(self.user_id, self.connection_id,
                                                           frame)
        self._acknowledge(message, frame)

    def _acknowledge(self, message: StoredMessage, frame: protocol.SendMessage) -> None:
        self.send(protocol.message_sent(message.to_wire(), frame.client_message_id))
        if log.isEnabledFor(logging.DEBUG):  # per message: skip building the record
            log.debug("message stored", extra={**self._log_context(),
                                               "conversationId": message.conversation_id,
                                               "messageId": message.id, "seq": message.seq})

    # -- helpers ------------------------------------------------------------

    def _forget_upgrade_state(self) -> None:
        """Drop what only the HTTP upgrade needed: an idle connection should
        cost as little memory as possible (:mod:`tornchat.leanconn`), and
        these are never read again."""
        forget_request_headers(self.request.headers)
        self._headers = HTTPHeaders()
        self.path_args = []
        self.path_kwargs = {}
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

        The hot path of every delivery. ``write_message`` would build the frame
        per recipient and wrap each write in a Future plus an asyncio Task; here
        the frame bytes are built once per fan-out (:class:`FrameCache`).
        """
        return self._write_frame_bytes(self._frames.get(frame))

    def send_ping(self) -> bool:
        """The heartbeat's ping, as prebuilt bytes (Tornado's ``ping`` costs a
        Future and a frame build per connection, thousands per beat)."""
        return self._write_frame_bytes(_PING_FRAME)

    def _write_frame_bytes(self, data: bytes) -> bool:
        """When nothing is queued on the stream, hand ``data`` to the kernel
        directly. Whatever the socket does not take (or any socket error) goes
        through ``IOStream.write``, which buffers it in order or closes the
        stream. False if the socket is closed; never raises."""
        connection = self.ws_connection
        if self._closed or connection is None or connection.is_closing():
            return False
        stream = connection.stream
        if stream is None:
            return False
        try:
            if type(stream) is IOStream and not stream.writing() and stream.socket is not None:
                try:
                    sent = stream.socket.send(data)
                except OSError:  # EAGAIN, or a dead socket that IOStream will close
                    sent = 0
                if sent == len(data):
                    return True
                data = data[sent:]
            stream.write(data)  # its Future already consumes its own exception
        except StreamClosedError:
            return False
        return True

    def terminate(self) -> None:
        """Drop a dead connection at once: no close handshake, no waiting."""
        self.chat.connection_closed(self)
        connection = self.ws_connection
        if connection is not None and connection.stream is not None:
            connection.stream.close()

    def _reject(self, exc: AuthError) -> None:
        log.info("authentication failed: %s", exc.reason, extra=self._log_context())
        self.send(protocol.auth_error(exc.reason))
        self.close(exc.close_code, exc.reason)

    def _on_auth_timeout(self) -> None:
        self._auth_timer = None
        if self.user_id is None and not self._closed:
            self._reject(AuthError("Authentication timeout"))

    def _cancel_auth_timer(self) -> None:
        if self._auth_timer is not None:
            IOLoop.current().remove_timeout(self._auth_timer)
            self._auth_timer = None

    def _log_context(self) -> dict[str, Any]:
        return {"connectionId": self.connection_id, "userId": self.user_id}
