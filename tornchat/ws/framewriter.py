"""Write server-to-client frames as prebuilt bytes, straight to the socket.

``WebSocketHandler.write_message`` builds the frame per recipient and wraps
each write in a Future and an asyncio Task; a fan-out to ten recipients would
pay that ten times. Here a frame is built once per fan-out
(:class:`FrameCache`) and handed to the kernel directly when nothing is queued
on the stream; whatever the socket does not take goes through
``IOStream.write``, which buffers it in order or closes the stream.

Relies on Tornado internals (``WebSocketProtocol.stream``, ``IOStream.socket``
and ``writing()``), measured in docs/performance.md and fenced by
``tests/ws/test_tornado_internals.py``. Thread rule: IOLoop thread only.
"""

from __future__ import annotations

import struct

from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketProtocol

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


def write_frame(connection: WebSocketProtocol | None, data: bytes) -> bool:
    """Write the frame bytes ``data``; False if the socket is closed. Never raises."""
    if connection is None or connection.is_closing():
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
