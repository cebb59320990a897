"""A deliberately trivial chat server: the yardstick for the load generator.

It speaks the subset of the tornchat protocol the benchmark uses (auth,
send_message by ``recipientIds`` or ``conversationId``, ping) over a bare
asyncio WebSocket implementation: no token check, no storage, no bus, each
outgoing frame encoded once and written to every recipient's transport. Its
cost per delivery is a small fraction of a client's, so the delivered
messages per second it sustains measure the *load generator's* ceiling on
this machine (both share the same cores).

Run alone: ``python -m loadtest.trivial_server --port 4800``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
from typing import Any

import orjson

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_TEXT, _OP_CLOSE, _OP_PING, _OP_PONG = 0x1, 0x8, 0x9, 0xA


def encode_frame(payload: bytes, opcode: int = _OP_TEXT) -> bytes:
    """An unmasked, unfragmented server frame."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, size))
    elif size < 65536:
        header = bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")
    return header + payload


def _unmask(payload: bytes, mask: bytes) -> bytes:
    size = len(payload)
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little")


def _user_of(token: object) -> str:
    """The ``sub`` of a JWT, unverified (this server trusts everyone)."""
    if not isinstance(token, str) or token.count(".") != 2:
        return str(token)
    body = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return str(claims.get("sub"))


class Hub:
    """Users, conversations and their members; one event loop, no locking."""

    def __init__(self) -> None:
        self.users: dict[str, set[Connection]] = {}
        self.conversations: dict[str, list[str]] = {}
        self.by_members: dict[tuple[str, ...], str] = {}
        self.seqs: dict[str, int] = {}
        self._ids = itertools.count(1)

    def conversation_for(self, members: tuple[str, ...]) -> str:
        found = self.by_members.get(members)
        if found is None:
            found = self.by_members[members] = f"c{next(self._ids)}"
            self.conversations[found] = list(members)
        return found


class Connection(asyncio.Protocol):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.user: str | None = None
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.user is not None:
            self.hub.users.get(self.user, set()).discard(self)
        self.transport = None

    def write(self, frame: bytes) -> None:
        if self.transport is not None:
            self.transport.write(frame)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._open and not self._handshake():
            return
        while self._open and self._next_frame():
            pass

    def _handshake(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        key = b""
        for line in bytes(self._buffer[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
        self.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        del self._buffer[:end + 4]
        self._open = True
        return True

    def _next_frame(self) -> bool:
        buf = self._buffer
        if len(buf) < 2:
            return False
        opcode, size, offset = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if size == 126:
            size, offset = int.from_bytes(buf[2:4], "big"), 4
        elif size == 127:
            size, offset = int.from_bytes(buf[2:10], "big"), 10
        masked = buf[1] & 0x80
        if len(buf) < offset + (4 if masked else 0) + size:
            return False
        if masked:
            mask = bytes(buf[offset:offset + 4])
            offset += 4
            payload = _unmask(bytes(buf[offset:offset + size]), mask)
        else:
            payload = bytes(buf[offset:offset + size])
        del buf[:offset + size]
        if opcode == _OP_TEXT:
            self._on_message(orjson.loads(payload))
        elif opcode == _OP_PING:
            self.write(encode_frame(payload, _OP_PONG))
        elif opcode == _OP_CLOSE:
            self.write(encode_frame(payload[:2], _OP_CLOSE))
            if self.transport is not None:
                self.transport.close()
            return False
        return True

    def _send(self, frame: dict[str, Any]) -> None:
        self.write(encode_frame(orjson.dumps(frame)))

    def _on_message(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "auth":
            self.user = _user_of(frame.get("token"))
            self.hub.users.setdefault(self.user, set()).add(self)
            self._send({"type": "auth_success",
                        "data": {"userId": self.user, "connectionId": str(id(self))}})
        elif kind == "send_message" and self.user is not None:
            self._fan_out(frame)
        elif kind == "ping":
            self._send({"type": "pong"})

    def _fan_out(self, frame: dict[str, Any]) -> None:
        hub = self.hub
        conversation = frame.get("conversationId")
        if conversation is None:
            members = tuple(sorted({self.user, *frame.get("recipientIds", ())}))
            conversation = hub.conversation_for(members)
        seq = hub.seqs[conversation] = hub.seqs.get(conversation, 0) + 1
        message = {"id": f"m{seq}", "conversationId": conversation, "senderId": self.user,
                   "content": frame.get("content"), "createdAt": "", "seq": seq}
        pushed = encode_frame(orjson.dumps({"type": "new_message", "data": message}))
        for user in hub.conversations.get(conversation, ()):
            for connection in hub.users.get(user, ()):
                if connection is not self:
                    connection.write(pushed)
        self._send({"type": "message_sent", "data": message,
                    "clientMessageId": frame.get("clientMessageId")})


async def serve(host: str, port: int) -> None:
    hub = Hub()
    server = await asyncio.get_running_loop().create_server(
        lambda: Connection(hub), host, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4800)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
