"""Live connections of this process, by user. IOLoop thread only.

Delivery writes one pre-encoded frame to many sockets; a socket that is
closed or fails is skipped and never stops delivery to the others. A
``new_message`` goes through :meth:`Connection.deliver_message` with its
conversation and ``seq``, so a connection can tell a repeat from a new one
(:mod:`tornchat.ws.replay`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Protocol

log = logging.getLogger(__name__)

_DISCONNECT_MEMORY = 1000  # users remembered before old entries are pruned
_DISCONNECT_WINDOW = 60.0  # seconds an authentication may take, at the most


class Connection(Protocol):
    connection_id: str
    user_id: str | None

    def send(self, frame: str) -> bool:
        """Queue a frame; False if the socket is already closed."""

    def deliver_message(self, frame: str, conversation_id: str, seq: int) -> bool:
        """Queue a ``new_message`` frame unless the connection had it already."""

    def disconnect(self, frame: str) -> None:
        """Send ``frame``, then close with 4003 (the server API's disconnect)."""


class ConnectionRegistry:
    def __init__(self) -> None:
        self._by_user: dict[str, dict[str, Connection]] = {}
        self._count = 0
        #: user -> when its sessions were last ended by the server API (monotonic)
        self._disconnected: dict[str, float] = {}

    def add(self, connection: Connection) -> None:
        assert connection.user_id is not None
        conns = self._by_user.setdefault(connection.user_id, {})
        if connection.connection_id not in conns:
            conns[connection.connection_id] = connection
            self._count += 1

    def remove(self, connection: Connection) -> bool:
        """Forget a connection; True if it was registered (idempotent)."""
        if connection.user_id is None:
            return False
        conns = self._by_user.get(connection.user_id)
        if conns is None or conns.pop(connection.connection_id, None) is None:
            return False
        self._count -= 1
        if not conns:
            del self._by_user[connection.user_id]
        return True

    def __len__(self) -> int:
        return self._count

    def connections_of(self, user_id: str) -> list[Connection]:
        return list(self._by_user.get(user_id, {}).values())

    def disconnect(self, user_ids: Iterable[str], frame: str) -> int:
        """End every live connection of ``user_ids``; returns how many."""
        now = time.monotonic()
        if len(self._disconnected) > _DISCONNECT_MEMORY:
            self._disconnected = {user: at for user, at in self._disconnected.items()
                                  if now - at < _DISCONNECT_WINDOW}
        for user_id in user_ids:
            self._disconnected[user_id] = now
        connections = [connection for user_id in user_ids
                       for connection in self.connections_of(user_id)]
        for connection in connections:
            try:
                connection.disconnect(frame)
            except Exception:
                log.warning("disconnecting a connection failed", exc_info=True,
                            extra={"connectionId": connection.connection_id})
        return len(connections)

    def disconnected_since(self, user_id: str, moment: float) -> bool:
        """Were the user's sessions ended after ``moment`` (monotonic)? A session
        that was still authenticating then must not survive it."""
        at = self._disconnected.get(user_id)
        return at is not None and at >= moment

    def deliver(self, user_ids: Iterable[str], frame: str, exclude: str | None = None,
                conversation_id: str = "", seq: int | None = None) -> int:
        """Write ``frame`` to every live connection of ``user_ids``; returns writes.

        With a ``seq``, the frame is that message of ``conversation_id``.
        """
        written = 0
        for user_id in user_ids:
            conns = self._by_user.get(user_id)
            if not conns:
                continue
            for connection in list(conns.values()):
                if connection.connection_id == exclude:
                    continue
                try:
                    if (connection.send(frame) if seq is None
                            else connection.deliver_message(frame, conversation_id, seq)):
                        written += 1
                except Exception:  # one bad socket must not stop the others
                    log.warning("delivery to a connection failed", exc_info=True,
                                extra={"connectionId": connection.connection_id,
                                       "userId": user_id})
        return written
