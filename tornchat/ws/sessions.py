"""The open WebSocket sessions of this process, from upgrade to close.

A session is open from the upgrade on and authenticated once its user holds
one of the user's connection slots; only then is it in the fan-out registry
and the ``tornchat_connections`` gauge. :class:`Sessions` is the one owner of
those transitions, so a connection is never counted twice nor forgotten in
one place and kept in another. IOLoop thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Protocol

from tornado.ioloop import IOLoop

from tornchat.errors import TooManyConnections
from tornchat.fanout.registry import Connection, ConnectionRegistry
from tornchat.fanout.slots import ConnectionSlots
from tornchat.metrics import Metrics

log = logging.getLogger(__name__)


class Session(Connection, Protocol):
    """What the sessions, the heartbeat and drain need of a connection (and
    the registry's fan-out, :class:`~tornchat.fanout.registry.Connection`)."""

    awaiting_pong: bool

    def send_ping(self) -> bool:
        """Queue a ping; False if the socket is closed."""

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Start the close handshake."""

    def terminate(self) -> None:
        """Drop the connection at once, no handshake."""


class Sessions:
    def __init__(self, registry: ConnectionRegistry, slots: ConnectionSlots,
                 metrics: Metrics) -> None:
        self.registry = registry
        self._slots = slots
        self._metrics = metrics
        self._open: set[Session] = set()
        #: False once the process drains: new upgrades are turned away
        self.accepting = True

    def __len__(self) -> int:
        """Authenticated sessions (those that count on ``/health``)."""
        return len(self.registry)

    def __contains__(self, session: object) -> bool:
        return session in self._open

    def __iter__(self) -> Iterator[Session]:
        """A snapshot of the open sessions (safe to close them while iterating)."""
        return iter(list(self._open))

    @property
    def open_count(self) -> int:
        return len(self._open)

    def opened(self, session: Session) -> None:
        self._open.add(session)

    async def authenticate(self, session: Session, user_id: str) -> None:
        """Take a slot for ``user_id`` and register the session for fan-out.

        Raises TooManyConnections when the user holds the maximum. A session
        that closed while its slot was being taken gives the slot back.
        """
        if not await self._slots.acquire(user_id, session.connection_id):
            raise TooManyConnections()
        if session not in self._open:
            await self._slots.release(user_id, session.connection_id)
            return
        session.user_id = user_id
        self.registry.add(session)
        self._metrics.connections.inc()

    def closed(self, session: Session) -> None:
        """Idempotent cleanup of everything a session is in."""
        self._open.discard(session)
        if self.registry.remove(session):
            assert session.user_id is not None
            self._metrics.connections.dec()
            IOLoop.current().add_callback(self._slots.release, session.user_id,
                                          session.connection_id)
            log.info("connection closed", extra={"connectionId": session.connection_id,
                                                 "userId": session.user_id})
