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

What a client sees is Tornado's ``_receive_frame`` unchanged: the same checks
(reserved bits, control-frame rules, fragmentation, ``max_message_size`` →
close 1009), the same dispatch (Tornado's own ``_handle_message``: text,
binary, close, ping, pong), one message at a time (the next frame is read only
once ``on_message`` has finished, so a connection's frames are handled in
order), and ``on_close`` exactly once at the end. A connection
that negotiated compression keeps Tornado's loop (this service never offers
it).

Thread rule: IOLoop thread only, like the rest of the handler.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any, cast

from tornado.iostream import StreamClosedError
from tornado.util import _websocket_mask  # Tornado's (C-accelerated) unmasking
from tornado.websocket import WebSocketProtocol13

log = logging.getLogger(__name__)

_FIN, _RSV_MASK, _OPCODE_MASK, _MASKED = 0x80, 0x70, 0x0F, 0x80
_OP_CONTINUATION, _CONTROL = 0x0, 0x8
_U16, _U64 = struct.Struct("!H"), struct.Struct("!Q")
_CHUNK = 65536  # the most one read takes from the socket


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
        if header & _RSV_MASK:  # an extension we never negotiated
            self._abort_and_finish()
            return
        length = length_byte & 0x7F
        if header & _CONTROL and length >= 126:  # control frames carry < 126 bytes
            self._abort_and_finish()
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
        if length + (len(fragments) if fragments is not None else 0) > \
                self.params.max_message_size:
            self.close(1009, "message too big")
            self._abort_and_finish()
            return
        masked = bool(length_byte & _MASKED)
        end = start + (4 if masked else 0) + length
        if available < end:  # the rest of this frame, exactly: no copying per chunk
            head = buffered[pos:]
            self._read(end - available, lambda more: self._next_frame(head + more))
            return
        start += pos
        end += pos
        mask = buffered[start:start + 4] if masked else None
        # the bytes after this frame stay where they are: a burst of small
        # frames costs no copying of what follows each one
        self._on_payload(header, mask, buffered[end - length:end], buffered, end)

    def _read_more(self, buffered: bytes) -> None:
        self._read(_CHUNK, lambda more: self._next_frame(buffered + more if buffered else more),
                   partial=True)

    def _on_payload(self, header: int, mask: bytes | None, data: bytes, buffered: bytes,
                    pos: int) -> None:
        if mask is not None:
            data = _websocket_mask(mask, data)
        final = bool(header & _FIN)
        opcode = header & _OPCODE_MASK
        if opcode & _CONTROL:
            if not final:  # control frames are never fragmented
                self._abort_and_finish()
                return
        elif opcode == _OP_CONTINUATION:
            if self._fragmented_message_buffer is None:  # nothing to continue
                self._abort_and_finish()
                return
            self._fragmented_message_buffer.extend(data)
            if final:
                opcode = cast(int, self._fragmented_message_opcode)  # Tornado types it None
                data = bytes(self._fragmented_message_buffer)
                self._fragmented_message_buffer = None
        else:
            if self._fragmented_message_buffer is not None:  # previous one unfinished
                self._abort_and_finish()
                return
            if not final:
                self._fragmented_message_opcode = opcode  # type: ignore[assignment]
                self._fragmented_message_buffer = bytearray(data)
        handled = self._handle_message(opcode, data) if final else None
        if handled is not None:  # one message at a time: the next once on_message is done
            handled.add_done_callback(lambda _: self._next_frame(buffered, pos))
        else:  # a control frame or a fragment: next frame on the next loop turn, so
            # a burst of them neither starves other connections nor deepens the stack
            assert self.stream is not None
            self.stream.io_loop.add_callback(self._next_frame, buffered, pos)

    # -- reading and ending ------------------------------------------------

    def _read(self, size: int, then: Callable[[bytes], None], partial: bool = False) -> None:
        """Call ``then(bytes)`` with the next ``size`` bytes (``partial``: up to
        ``size``, whatever is there): now, if buffered."""
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
            self._deliver(future, then)
        else:
            future.add_done_callback(lambda done: self._deliver(done, then))

    def _deliver(self, future: Any, then: Callable[[bytes], None]) -> None:
        """Hand the read bytes on. Whatever goes wrong ends this connection
        (and runs ``on_close``) but never escapes into the event loop, where it
        would only be logged and leave the connection registered."""
        try:
            data = future.result()
        except (StreamClosedError, asyncio.CancelledError):
            self._abort_and_finish()
            return
        except Exception:
            self._fail()
            return
        try:
            then(data)
        except Exception:
            self._fail()

    def _fail(self) -> None:
        log.exception("error while reading WebSocket frames; closing the connection")
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
