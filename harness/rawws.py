"""WebSocket clients on a raw socket, for what a client library will not do.

Two clients share the handshake and the framing:

- :class:`RawWebSocket`: a minimal asyncio client, cheap enough to be a load
  generator. General clients (aiohttp, websockets) spend a coroutine step and
  a message object on every frame; at tens of thousands of deliveries per
  second that overhead, not the server, would set the ceiling. This client
  parses frames straight out of ``data_received`` and hands each text payload
  to a callback. Outgoing frames use the all-zero mask (a valid mask key,
  which makes masking the identity), so a send is one ``transport.write``.
  Scope: text frames, ping/pong and close; no extensions, no fragmentation on
  send (received continuation frames are reassembled). Thread rule: one loop.
- :class:`SilentClient`: a deliberately dumb blocking client that never
  answers pings, to play a client that is alive at the TCP level but has
  stopped responding, which a well-behaved client library cannot imitate.

And :func:`unread_client`, an asyncio socket that authenticates and then
never reads (a slow consumer), and :func:`server_frames`, which splits what
a server wrote into its frames.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_ZERO_MASK = b"\x00\x00\x00\x00"


class HandshakeError(ConnectionError):
    """The server did not switch protocols."""


def upgrade_request(host: str, port: int, path: str) -> bytes:
    """The HTTP/1.1 request that asks to switch to WebSocket (a fresh random key)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def client_frame(payload: bytes, opcode: int = _OP_TEXT, mask: bytes = _ZERO_MASK) -> bytes:
    """One final client frame; the default all-zero mask leaves the payload as it is."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        header = bytes((0x80 | opcode, 0xFE)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0xFF)) + size.to_bytes(8, "big")
    if mask != _ZERO_MASK:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + payload


class RawWebSocket(asyncio.Protocol):
    """One client connection; ``on_text`` receives every text message."""

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._buffer = bytearray()
        self._open = False
        self._fragments: list[bytes] = []
        self.transport: Any = None  # asyncio.Transport, or uvloop's
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inbox: asyncio.Queue[str] = asyncio.Queue()
        self.on_text: Callable[[str], None] = self._inbox.put_nowait

    @classmethod
    async def connect(cls, url: str, timeout: float = 30.0) -> RawWebSocket:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = upgrade_request(host, port, path)
        loop = asyncio.get_running_loop()
        _, protocol = await asyncio.wait_for(
            loop.create_connection(lambda: cls(request), host, port), timeout)
        await asyncio.wait_for(protocol.handshake, timeout)
        return protocol

    async def recv(self, timeout: float = 30.0) -> str:
        """The next text message (only while ``on_text`` is left at its default)."""
        return await asyncio.wait_for(self._inbox.get(), timeout)

    def send_text(self, text: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(text.encode()))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(b"\x03\xe8", _OP_CLOSE))
            self.transport.close()

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.handshake.done():
            self.handshake.set_exception(HandshakeError(f"connection lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._open:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._buffer[:self._buffer.find(b"\r\n")])
            del self._buffer[:end + 4]
            if b" 101 " not in status:
                self.handshake.set_exception(HandshakeError(status.decode(errors="replace")))
                if self.transport is not None:
                    self.transport.close()
                return
            self._open = True
            self.handshake.set_result(None)
        self._parse()

    def _parse(self) -> None:
        buf = self._buffer
        while len(buf) >= 2:
            first, size, offset = buf[0], buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    return
                size, offset = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                if len(buf) < 10:
                    return
                size, offset = int.from_bytes(buf[2:10], "big"), 10
            end = offset + size
            if len(buf) < end:
                return
            payload = bytes(buf[offset:end])
            del buf[:end]
            self._on_frame(first & 0x0F, bool(first & 0x80), payload)

    def _on_frame(self, opcode: int, final: bool, payload: bytes) -> None:
        if opcode in (_OP_TEXT, _OP_BINARY, _OP_CONT):
            if not final:
                self._fragments.append(payload)
                return
            if self._fragments:
                payload = b"".join((*self._fragments, payload))
                self._fragments = []
            self.on_text(payload.decode())
        elif opcode == _OP_PING and self.transport is not None:
            self.transport.write(client_frame(payload, _OP_PONG))
        elif opcode == _OP_CLOSE:
            self.close()


class SilentClient:
    """A blocking client that sends what it is told and never answers a ping."""

    def __init__(self, host: str, port: int, path: str = "/api/v1/chat") -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.sendall(upgrade_request(host, port, path))
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(4096)
        assert response.startswith(b"HTTP/1.1 101"), response

    def send_json(self, frame: dict[str, Any]) -> None:
        self.sock.sendall(client_frame(json.dumps(frame).encode(), mask=os.urandom(4)))

    def wait_closed_by_server(self, timeout: float) -> bool:
        """Read (and ignore) everything until the server drops the socket."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(4096):
                pass
        except TimeoutError:
            return False
        except OSError:
            return True
        return True

    def close(self) -> None:
        self.sock.close()


async def unread_client(host: str, port: int, token: str,
                        path: str = "/api/v1/chat") -> socket.socket:
    """Upgrade and authenticate, then never read again: a tiny receive buffer,
    so the kernel holds little for it, and no reads once ``auth_success`` came."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, (host, port))
    await loop.sock_sendall(sock, upgrade_request(host, port, path))
    await loop.sock_sendall(sock, client_frame(json.dumps(
        {"type": "auth", "token": token}).encode()))
    head = b""
    while b"auth_success" not in head:
        head += await asyncio.wait_for(loop.sock_recv(sock, 1024), 10)
    return sock


def server_frames(data: bytes) -> tuple[list[tuple[int, bool, bytes]], bytes]:
    """The whole frames in ``data`` as (opcode, masked, payload), and the bytes
    after the last whole one. For server output: unfragmented, unmasked
    frames are what a server writes (``masked`` says if one was not)."""
    frames: list[tuple[int, bool, bytes]] = []
    pos = 0
    while pos + 2 <= len(data):
        opcode, size, masked = data[pos] & 0x0F, data[pos + 1] & 0x7F, bool(data[pos + 1] & 0x80)
        start = pos + 2 + (2 if size == 126 else 8 if size == 127 else 0) + (4 if masked else 0)
        if start > len(data):
            break
        if size == 126:
            size = struct.unpack_from("!H", data, pos + 2)[0]
        elif size == 127:
            size = struct.unpack_from("!Q", data, pos + 2)[0]
        if start + size > len(data):
            break
        frames.append((opcode, masked, data[start:start + size]))
        pos = start + size
    return frames, data[pos:]
