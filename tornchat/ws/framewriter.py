"""Write server-to-client frames as prebuilt bytes, straight to the socket.

``WebSocketHandler.write_message`` builds the frame per recipient and wraps
each write in a Future and an asyncio Task; a fan-out to ten recipients would
pay that ten times. Here a frame is built once per fan-out
(:class:`FrameCache`) and handed to the kernel directly when nothing is queued
on the stream; whatever the socket does not take goes through
``IOStream.write``, which buffers it in order or closes the stream.

Relies on Tornado internals (``WebSocketProtocol.stream``, ``IOStream.socket``,
``writing()`` and ``_write_buffer``), measured in docs/performance.md and fenced by
``tests/ws/test_tornado_internals.py``. Thread rule: IOLoop thread only.
"""

from __future__ import annotations

import struct

from tornado.iostream import IOStream, StreamBufferFullError, StreamClosedError
from tornado.websocket import WebSocketProtocol

from tornchat.errors import SlowConsumer

_FIN_TEXT = 0x81
#: FIN + ping, no payload, unmasked (server to client)
PING_FRAME = b"\x89\x00"


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


async def drained(connection: WebSocketProtocol | None) -> None:
    """Wait until the socket took everything written so far (backpressure for
    a large write, such as a sync's replay); at once if nothing is queued."""
    stream = None if connection is None else connection.stream
    if stream is None or not stream.writing():
        return
    try:
        await stream.write(b"")  # done once the bytes queued before it are sent
    except StreamClosedError:
        return


def write_frame(connection: WebSocketProtocol | None, data: bytes, limit: int | None = None,
                exempt: bool = False) -> bool:
    """Write the frame bytes ``data``; False if the socket is closed.

    ``limit`` bounds the unsent bytes (``TORNCHAT_MAX_OUTBOUND_BYTES``): a
    write that would pass it raises :class:`~tornchat.errors.SlowConsumer`
    and queues nothing. An ``exempt`` write (a reply, a sync's replay, the
    messages held back during one: all bounded where they are made) may pass
    it, as long as no more than ``limit`` was queued before it, and what it
    queued is allowed on top of ``limit`` until the socket has taken
    everything; the bound is back to ``limit`` from the next write that
    finds nothing queued. So the queue never holds more than twice ``limit``
    plus one exempt write, however a client interleaves requests.
    """
    if connection is None or connection.is_closing():
        return False
    stream = connection.stream
    if stream is None:
        return False
    try:
        idle = not stream.writing()
        if idle:
            stream.max_write_buffer_size = limit  # drained: any allowance is spent
        if exempt:
            if limit is not None and len(stream._write_buffer) > limit:
                raise StreamBufferFullError("behind by more than the bound already")
            stream.max_write_buffer_size = None
        if idle and type(stream) is IOStream and stream.socket is not None:
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
    except StreamBufferFullError:
        raise SlowConsumer(f"{len(stream._write_buffer)} bytes unsent, {len(data)} more") \
            from None
    finally:
        if exempt and limit is not None:
            stream.max_write_buffer_size = len(stream._write_buffer) + limit
    return True
