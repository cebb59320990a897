"""Read an open WebSocket's frames with callbacks instead of a coroutine chain.

Tornado reads client frames in ``_receive_frame_loop``, awaited by
``_accept_connection``, awaited by ``WebSocketHandler.get``, awaited by the
request's ``_execute`` task: that chain of suspended coroutines and tasks
lives as long as the connection (about 3 KB per idle connection) and costs a
few coroutine steps per frame. :class:`LeanWebSocketProtocol` ends the chain
as soon as the socket is open and reads frames through ``IOStream.read_bytes``
futures and callbacks; a read the stream's buffer already satisfies is
handled at once, with no trip through the event loop.

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

log = logging.getLogger("tornchat.ws")

_FIN, _RSV_MASK, _OPCODE_MASK, _MASKED = 0x80, 0x70, 0x0F, 0x80
_OP_CONTINUATION, _CONTROL = 0x0, 0x8


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

    def _next_frame(self) -> None:
        if self.client_terminated:
            self._finish()
            return
        self._read(2, self._on_header)

    def _on_header(self, data: bytes) -> None:
        header, length_byte = data[0], data[1]
        opcode = header & _OPCODE_MASK
        if header & _RSV_MASK:  # an extension we never negotiated
            self._abort_and_finish()
            return
        length = length_byte & 0x7F
        if opcode & _CONTROL and length >= 126:  # control frames carry < 126 bytes
            self._abort_and_finish()
            return
        extra = (2 if length == 126 else 8 if length == 127 else 0)
        masked = bool(length_byte & _MASKED)
        rest = extra + (4 if masked else 0)
        if rest:
            self._read(rest, lambda more: self._on_length(header, length, masked, more))
        else:
            self._on_length(header, length, masked, b"")

    def _on_length(self, header: int, length: int, masked: bool, more: bytes) -> None:
        if length == 126:
            length = struct.unpack("!H", more[:2])[0]
        elif length == 127:
            length = struct.unpack("!Q", more[:8])[0]
        buffered = self._fragmented_message_buffer
        if length + (len(buffered) if buffered is not None else 0) > \
                self.params.max_message_size:
            self.close(1009, "message too big")
            self._abort_and_finish()
            return
        mask = more[-4:] if masked else None
        if length:
            self._read(length, lambda payload: self._on_payload(header, mask, payload))
        else:
            self._on_payload(header, mask, b"")

    def _on_payload(self, header: int, mask: bytes | None, data: bytes) -> None:
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
            handled.add_done_callback(lambda _: self._next_frame())
        else:  # a control frame or a fragment: next frame on the next loop turn, so
            # a burst of them neither starves other connections nor deepens the stack
            assert self.stream is not None
            self.stream.io_loop.add_callback(self._next_frame)

    # -- reading and ending ------------------------------------------------

    def _read(self, size: int, then: Callable[[bytes], None]) -> None:
        """Call ``then(bytes)`` with the next ``size`` bytes: now, if buffered."""
        try:
            assert self.stream is not None
            future: Any = self.stream.read_bytes(size)
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
