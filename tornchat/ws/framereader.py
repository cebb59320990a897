"""Read an open WebSocket's frames with callbacks instead of a coroutine chain.

Tornado reads client frames in ``_receive_frame_loop``, awaited by
``_accept_connection``, awaited by ``WebSocketHandler.get``, awaited by the
request's ``_execute`` task: that chain of suspended coroutines and tasks
lives as long as the connection (about 3 KB per idle connection) and costs a
few coroutine steps per frame. :class:`LeanWebSocketProtocol` ends the chain
as soon as the socket is open and reads frames through ``IOStream.read_bytes``
futures and callbacks; a read the stream's buffer already satisfies is
handled at once, with no trip through the event loop. It reads whatever the
socket holds and parses frames from those bytes itself, which keeps the
socket's registration with the event loop unchanged from one message to the
next (for a client that waits for each reply; one that keeps sending while
its previous message is handled leaves bytes in Tornado's buffer, and
Tornado pauses reading meanwhile, as it always did).

What a client sees is RFC 6455 to the letter, which Tornado's own loop is
not (it accepts unmasked client frames, echoes any close code, and ends most
protocol errors with a bare TCP close). Every protocol error *fails the
connection* (section 7.1.7): a close frame with the code, then the TCP close,
and a warning in the log naming the connection, never a traceback:

- 1002: reserved bits set (no extension is ever negotiated), a reserved
  opcode, an unmasked client frame, a control frame that is fragmented or
  carries over 125 bytes, a continuation with nothing to continue, a new data
  message inside a fragmented one, a close frame with a 1-byte payload or a
  code outside :func:`valid_close_code`;
- 1007: a text message that is not UTF-8 (checked per fragment as it
  arrives, so a bad first fragment fails at once), a close reason that is not;
- 1009: a message over ``max_message_size`` (checked on each frame header).

Checks on a frame's header run before its payload is read. A valid close
frame is answered with its code (none if it had none; the reason is not
echoed) and the TCP connection closes. Pings are answered in order, also
between the fragments of a message. Messages are dispatched one at a time
(the next frame is read only once ``on_message`` has finished, so a
connection's frames are handled in order), and ``on_close`` runs exactly
once at the end. A connection that negotiated compression keeps Tornado's
loop (this service never offers it). docs/websocket.md maps the Autobahn
test-suite categories to what happens here; tests/ws/test_rfc6455.py checks
it against wsproto as the reference parser.

Thread rule: IOLoop thread only, like the rest of the handler.
"""

from __future__ import annotations

import codecs
import logging
import struct
from collections.abc import Callable
from typing import Any, cast

from tornado.iostream import StreamBufferFullError, StreamClosedError
from tornado.util import _websocket_mask  # Tornado's (C-accelerated) unmasking
from tornado.websocket import WebSocketProtocol13

log = logging.getLogger(__name__)

_FIN, _RSV_MASK, _OPCODE_MASK, _MASKED = 0x80, 0x70, 0x0F, 0x80
_OP_CONTINUATION, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _CONTROL = 0x0, 0x1, 0x2, 0x8, 0x8
_OPCODES = frozenset((0x0, 0x1, 0x2, 0x8, 0x9, 0xA))  # the rest are reserved
PROTOCOL_ERROR, INVALID_DATA, MESSAGE_TOO_BIG = 1002, 1007, 1009
_U16, _U64 = struct.Struct("!H"), struct.Struct("!Q")
_CHUNK = 65536  # the most one read takes from the socket


def valid_close_code(code: int) -> bool:
    """May a peer send ``code`` in a close frame (RFC 6455 section 7.4)?

    1000-1003 and 1007-1014 are the registered codes a peer may send (1004
    is reserved; 1005, 1006 and 1015 only ever describe a close locally and
    never travel in a frame), 3000-3999 are for libraries and frameworks,
    4000-4999 private. Everything else is refused with 1002.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class _TextFragments(bytearray):
    """The fragments of a text message so far, and the UTF-8 decoder that has
    checked them: an invalid byte fails the message as soon as it arrives.
    It stands in Tornado's ``_fragmented_message_buffer``, so the protocol
    object gets no attribute of its own (see :class:`LeanWebSocketProtocol`)."""

    __slots__ = ("decoder",)

    def __init__(self, first: bytes) -> None:
        super().__init__(first)
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.decoder.decode(first)


class LeanWebSocketProtocol(WebSocketProtocol13):
    """``WebSocketProtocol13`` with a callback-driven receive loop.

    It adds no instance attributes: one more would grow every connection's
    attribute dict to its next size (about 1.5 KB).
    """

    async def _receive_frame_loop(self) -> None:
        if self._decompressor is not None:
            await super()._receive_frame_loop()
            return
        self._next_frame()  # returns at once: the upgrade's coroutines end here

    # -- the frame state machine ------------------------------------------

    def _next_frame(self, buffered: bytes = b"", pos: int = 0) -> None:
        """Handle the next frame, from ``buffered[pos:]`` (bytes read beyond
        the previous frame) and as much more as it needs.

        Reads take whatever the socket holds (``partial``), so the stream's
        own buffer is left empty and the socket stays registered for reading;
        an exact-size read, which leaves the rest of a burst in that buffer,
        makes Tornado drop the registration and add it again per message (two
        selector calls and a system call each). Frames that arrived together
        are parsed from ``buffered`` with no read at all.
        """
        if self.client_terminated:
            self._finish()
            return
        available = len(buffered) - pos
        if available < 2:
            self._read_more(buffered[pos:])
            return
        header, length_byte = buffered[pos], buffered[pos + 1]
        length = length_byte & 0x7F
        problem = self._header_problem(header, length_byte, length)
        if problem is not None:
            self._fail_connection(PROTOCOL_ERROR, problem)
            return
        start = 2 + (2 if length == 126 else 8 if length == 127 else 0)
        if available < start:
            self._read_more(buffered[pos:])
            return
        if length == 126:
            length = _U16.unpack_from(buffered, pos + 2)[0]
        elif length == 127:
            length = _U64.unpack_from(buffered, pos + 2)[0]
        fragments = self._fragmented_message_buffer
        size = length  # a message's size is its fragments' sum; a control frame's its own
        if not header & _CONTROL and fragments is not None:
            size += len(fragments)
        if size > self.params.max_message_size:
            self._fail_connection(MESSAGE_TOO_BIG, "message too big")
            return
        end = start + 4 + length  # masked: _header_problem made sure
        if available < end:  # the rest of this frame, exactly: no copying per chunk
            head = buffered[pos:]
            self._read(end - available, lambda more: self._next_frame(head + more))
            return
        start += pos
        end += pos
        # the bytes after this frame stay where they are: a burst of small
        # frames costs no copying of what follows each one
        self._on_payload(header, buffered[start:start + 4], buffered[end - length:end],
                         buffered, end)

    def _header_problem(self, header: int, length_byte: int, length: int) -> str | None:
        """What is wrong with a frame, from its first two bytes (None: nothing)."""
        if header & _RSV_MASK:
            return "reserved bits set without an extension"
        opcode = header & _OPCODE_MASK
        if opcode not in _OPCODES:
            return f"reserved opcode {opcode:#x}"
        if not length_byte & _MASKED:
            return "client frames must be masked"
        if opcode & _CONTROL:
            if length >= 126:
                return "control frame with a payload over 125 bytes"
            if not header & _FIN:
                return "fragmented control frame"
        elif opcode == _OP_CONTINUATION:
            if self._fragmented_message_buffer is None:
                return "continuation frame with no message to continue"
        elif self._fragmented_message_buffer is not None:
            return "new data frame inside a fragmented message"
        return None

    def _read_more(self, buffered: bytes) -> None:
        if buffered:
            self._read(_CHUNK, lambda more: self._next_frame(buffered + more), partial=True)
        else:  # between messages, where an idle connection waits
            self._read(_CHUNK, None, partial=True)

    def _on_payload(self, header: int, mask: bytes, data: bytes, buffered: bytes,
                    pos: int) -> None:
        """A whole frame whose header passed :meth:`_header_problem`."""
        data = _websocket_mask(mask, data)
        final = bool(header & _FIN)
        opcode = header & _OPCODE_MASK
        if opcode == _OP_CLOSE:
            self._on_close_frame(data)
            return
        handled = None
        try:
            if opcode & _CONTROL:  # ping or pong: Tornado answers a ping
                handled = self._handle_message(opcode, data)
            elif opcode == _OP_CONTINUATION:
                fragments = self._fragmented_message_buffer
                assert fragments is not None
                fragments.extend(data)
                if isinstance(fragments, _TextFragments):
                    fragments.decoder.decode(data, final)
                if final:
                    self._fragmented_message_buffer = None
                    handled = self._dispatch(cast(int, self._fragmented_message_opcode),
                                             bytes(fragments))
            elif final:
                handled = self._dispatch(opcode, data)
            else:
                self._fragmented_message_opcode = opcode  # type: ignore[assignment]
                self._fragmented_message_buffer = (_TextFragments(data) if opcode == _OP_TEXT
                                                   else bytearray(data))
        except UnicodeDecodeError:
            self._fail_connection(INVALID_DATA, "text message is not valid UTF-8")
            return
        except StreamBufferFullError:  # a pong that does not fit: the client does not read
            self._slow_consumer()  # and read on, for the client's close
        if handled is not None:  # one message at a time: the next once on_message is done
            handled.add_done_callback(lambda _: self._next_frame(buffered, pos))
        else:  # a control frame or a fragment: next frame on the next loop turn, so
            # a burst of them neither starves other connections nor deepens the stack
            assert self.stream is not None
            self.stream.io_loop.add_callback(self._next_frame, buffered, pos)

    def _dispatch(self, opcode: int, data: bytes) -> Any:
        """A whole text or binary message to ``on_message`` (as Tornado's
        ``_handle_message``, which would decode text a second time)."""
        if self.client_terminated:
            return None
        self._message_bytes_in += len(data)
        if opcode == _OP_TEXT:
            return self._run_callback(self.handler.on_message, data.decode("utf-8"))
        return self._run_callback(self.handler.on_message, data)

    def _on_close_frame(self, data: bytes) -> None:
        """The client closes: a valid close is answered with its code, then TCP closes."""
        code: int | None = None
        if len(data) == 1:
            self._fail_connection(PROTOCOL_ERROR, "close frame with a 1-byte payload")
            return
        if data:
            code = _U16.unpack_from(data)[0]
            if not valid_close_code(code):
                self._fail_connection(PROTOCOL_ERROR, f"invalid close code {code}")
                return
            try:
                self.close_reason = data[2:].decode("utf-8")
            except UnicodeDecodeError:
                self._fail_connection(INVALID_DATA, "close reason is not valid UTF-8")
                return
            self.close_code = code
        self.client_terminated = True
        self.close(code)  # with the client terminated, this also closes TCP
        self._finish()

    def _slow_consumer(self) -> None:
        ending = getattr(self.handler, "slow_consumer", None)
        if ending is not None:
            ending()
        else:
            self._abort_and_finish()

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Tornado's, but a close frame always fits in the outbound bound
        (the one place a close is written, whoever closes: the handler's
        ``close`` comes here too)."""
        if self.stream is not None:
            self.stream.max_write_buffer_size = None
        super().close(code, reason)

    def _fail_connection(self, code: int, why: str) -> None:
        """RFC 6455 section 7.1.7: a close frame with ``code``, then the TCP
        close; nothing more is read. The client's fault: a warning, no traceback."""
        log.warning("WebSocket protocol error: %s; closing with %d", why, code,
                    extra={"connectionId": getattr(self.handler, "connection_id", None),
                           "closeCode": code})
        self.client_terminated = True
        self.close(code, why)
        self._finish()

    # -- reading and ending ------------------------------------------------

    def _read(self, size: int, then: Callable[[bytes], None] | None,
              partial: bool = False) -> None:
        """Call ``then(bytes)`` with the next ``size`` bytes (``partial``: up to
        ``size``, whatever is there): now, if buffered. ``None`` means the next
        frame from those bytes, waited for through one bound method: an idle
        connection waits here, and two closures with their cells would be
        seven more objects per connection for the cycle collector to walk."""
        try:
            assert self.stream is not None
            future: Any = self.stream.read_bytes(size, partial=partial)
        except StreamClosedError:
            self._abort_and_finish()
            return
        except Exception:
            self._fail()
            return
        if future.done():
            self._deliver(future, then or self._next_frame)
        elif then is None:
            future.add_done_callback(self._on_next_bytes)
        else:
            future.add_done_callback(lambda done: self._deliver(done, then))

    def _on_next_bytes(self, future: Any) -> None:
        self._deliver(future, self._next_frame)

    def _deliver(self, future: Any, then: Callable[[bytes], None]) -> None:
        """Hand the read bytes on. Whatever goes wrong ends this connection
        (and runs ``on_close``) but never escapes into the event loop, where it
        would only be logged and leave the connection registered.

        A failed read is looked at with ``exception()``, not re-raised with
        ``result()``: raising it would give the exception a traceback through
        this frame, which holds the future, which holds the exception, a
        reference cycle per closed connection (44 objects) that only the
        cyclic collector frees; a flood of closed connections made its passes
        take 40-55 ms each.
        """
        if future.cancelled():
            self._abort_and_finish()
            return
        error = future.exception()
        if error is not None:
            if isinstance(error, StreamClosedError):
                self._abort_and_finish()
            else:
                self._fail(error)
            return
        data = future.result()
        try:
            then(data)
        except Exception:
            self._fail()

    def _fail(self, error: BaseException | None = None) -> None:
        log.error("error while reading WebSocket frames; closing the connection",
                  exc_info=error or True)
        self._abort_and_finish()

    def _abort_and_finish(self) -> None:
        self._abort()
        self._finish()

    def _finish(self) -> None:
        """The end of reading; the handler's ``on_close`` runs once however
        often this is reached (Tornado guards it with ``_on_close_called``)."""
        self.handler.on_ws_connection_close(self.close_code, self.close_reason)


def lean_protocol(protocol: Any) -> Any:
    """Switch a plain ``WebSocketProtocol13`` to :class:`LeanWebSocketProtocol`
    (same state, one more behaviour); anything else is returned unchanged."""
    if type(protocol) is WebSocketProtocol13:
        protocol.__class__ = LeanWebSocketProtocol
    return protocol
