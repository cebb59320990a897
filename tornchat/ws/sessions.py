"""The open WebSocket sessions of this process, from upgrade to close.

A session is open from the upgrade on and authenticated once its user holds
one of the user's connection slots; only then is it in the fan-out registry
and the ``tornchat_connections`` gauge, and does its user count as online
(:mod:`tornchat.fanout.presence`). :class:`Sessions` is the one owner of
those transitions, so a connection is never counted twice nor forgotten in
one place and kept in another. IOLoop thread only.
"""

from __future__ import annotations

import collections
import logging
import random
import time
from collections.abc import Iterator
from typing import Protocol

from tornado.ioloop import IOLoop

from tornchat.auth import Identity
from tornchat.errors import DisconnectedByServer, TooManyConnections
from tornchat.fanout.presence import Presence
from tornchat.fanout.registry import Connection, ConnectionRegistry
from tornchat.fanout.slots import ConnectionSlots
from tornchat.metrics import Metrics
from tornchat.ws.deadlines import DeadlineWheel

log = logging.getLogger(__name__)

_REFUSAL_LOG_INTERVAL = 10.0  # seconds between warnings about refused upgrades
_CLOSES_PER_TURN = 32  # sessions closed for an auth timeout per event-loop turn
#: auth deadlines fall up to this fraction of TORNCHAT_AUTH_TIMEOUT later, at random
AUTH_DEADLINE_SPREAD = 0.2
#: seconds per bucket of token expiries: a session ends at most this long after its ``exp``
EXPIRY_RESOLUTION = 1.0


def auth_deadline(auth_timeout: float) -> float:
    """Seconds a new connection gets to authenticate: the timeout, plus up to a
    fifth of it at random. A flood accepted in one burst would otherwise fall
    due in one burst too, and its closes would stall the users' messages (the
    client still has the whole timeout; the server only closes a little later)."""
    return auth_timeout * (1.0 + AUTH_DEADLINE_SPREAD * random.random())


def _seconds_until(epoch: float) -> float:
    """From an ``exp`` (wall clock) to a delay on the event loop's own clock."""
    return epoch - time.time()


class Session(Connection, Protocol):
    """What the sessions, the heartbeat and drain need of a connection (and
    the registry's fan-out, :class:`~tornchat.fanout.registry.Connection`)."""

    awaiting_pong: bool
    #: the token's ``exp`` (epoch seconds), once authenticated
    expires_at: float

    def send_ping(self) -> bool:
        """Queue a ping; False if the socket is closed."""

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Start the close handshake."""

    def terminate(self) -> None:
        """Drop the connection at once, no handshake."""

    def expire(self) -> None:
        """The token ran out: ``auth_error`` and close 4001."""

    def auth_timed_out(self) -> None:
        """No ``auth`` in time: ``auth_error`` and close 4001 (if still unauthenticated)."""


class PendingWatch(Protocol):
    def pending(self, count: int) -> None:
        """``count`` sessions now wait to authenticate."""

    def authenticated(self) -> None:
        """A session authenticated: its place may go to the next connection."""


class Sessions:
    def __init__(self, registry: ConnectionRegistry, slots: ConnectionSlots,
                 presence: Presence, metrics: Metrics) -> None:
        self.registry = registry
        self._presence = presence
        #: ends sessions at their token's ``exp`` (PROTOCOL section 14), unless
        #: refreshed; sessions whose tokens end in the same second share a bucket
        self.expiry: DeadlineWheel[Session] = DeadlineWheel(self._token_ended,
                                                             EXPIRY_RESOLUTION)
        self._slots = slots
        self._metrics = metrics
        self._open: set[Session] = set()
        #: False once the process drains: new upgrades are turned away
        self.accepting = True
        #: told how many wait to authenticate whenever that changes (the accept gate)
        self.pending_watch: PendingWatch | None = None
        self._timed_out: collections.deque[Session] = collections.deque()
        #: open sessions that have yet to send ``auth``, by their deadline
        self._auth_deadlines: DeadlineWheel[Session] = DeadlineWheel(self.auth_timed_out)
        #: wall clock minus the loop's clock at the last heartbeat (None: not yet)
        self._clock_offset: float | None = None
        self._refused = 0  # upgrades refused since the last warning
        self._refusal_logged = -_REFUSAL_LOG_INTERVAL

    def _token_ended(self, session: Session) -> None:
        """Due on the event loop's clock; ended once the wall clock agrees too
        (one stepped back by more than a bucket since the session was added
        sets it again; a forward step is :meth:`notice_clock_step`'s)."""
        left = _seconds_until(session.expires_at)
        if left > EXPIRY_RESOLUTION:
            self.expiry.add(session, left)
        else:
            session.expire()

    def notice_clock_step(self) -> int:
        """Called every heartbeat: if the wall clock jumped ahead of the event
        loop's monotonic clock since the last call (an NTP step, a resumed
        VM), the ``exp`` of every session came that much closer, so each
        session's expiry is scheduled again from the wall clock. Without it a
        session would end as late as the step was long. Returns how many
        were rescheduled."""
        offset = time.time() - IOLoop.current().time()
        previous, self._clock_offset = self._clock_offset, offset
        if previous is None or offset - previous <= EXPIRY_RESOLUTION:
            return 0
        waiting = [session for session in self._open if session in self.expiry]
        for session in waiting:
            self.expiry.add(session, _seconds_until(session.expires_at))  # moves it
        log.warning("the wall clock jumped ahead of the monotonic clock: token expiries "
                    "rescheduled", extra={"stepSeconds": round(offset - previous, 3),
                                          "sessions": len(waiting)})
        return len(waiting)

    def stop_timers(self) -> None:
        """Token expiry and auth deadlines stop (the application closes)."""
        self.expiry.close()
        self._auth_deadlines.close()

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

    def admit(self, max_pending: int) -> bool:
        """May one more connection upgrade? Not while ``max_pending`` open
        sessions have yet to authenticate (a flood of sockets that never send
        ``auth`` must not crowd out the users); a refusal is counted, and
        logged at most every ten seconds."""
        if self.pending < max_pending:
            return True
        self._metrics.refused_pending.inc()
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged >= _REFUSAL_LOG_INTERVAL:
            log.warning("refusing WebSocket upgrades: too many connections not authenticated",
                        extra={"pending": self.pending,
                               "limit": max_pending, "refusedSinceLastLog": self._refused})
            self._refusal_logged = now
            self._refused = 0
        return False

    @property
    def pending(self) -> int:
        """Open sessions that have not authenticated yet."""
        return len(self._open) - len(self.registry)

    def auth_timed_out(self, session: Session) -> None:
        """``session`` sent no ``auth`` in time. Closed a few per loop turn:
        the deadlines of a burst of connections (a flood that never
        authenticates) fall due together, and closing a thousand in one turn
        held every other connection's messages up for about 100 ms."""
        self._timed_out.append(session)
        if len(self._timed_out) == 1:
            IOLoop.current().add_callback(self._close_timed_out)

    def _close_timed_out(self) -> None:
        try:
            for _ in range(min(_CLOSES_PER_TURN, len(self._timed_out))):
                session = self._timed_out.popleft()
                if session in self._open:
                    try:
                        session.auth_timed_out()
                    except Exception:  # one bad socket must not stop the others
                        log.warning("closing a session after its auth timeout failed",
                                    exc_info=True,
                                    extra={"connectionId": session.connection_id})
                        session.terminate()
        finally:
            if self._timed_out:
                IOLoop.current().add_callback(self._close_timed_out)

    def _pending_changed(self) -> None:
        if self.pending_watch is not None:
            self.pending_watch.pending(self.pending)

    def opened(self, session: Session, auth_within: float) -> None:
        """A new session, closed if no ``auth`` frame comes within ``auth_within`` s."""
        self._open.add(session)
        self._auth_deadlines.add(session, auth_within)
        self._pending_changed()

    def auth_received(self, session: Session) -> None:
        """Its ``auth`` frame came: the deadline no longer applies while it is answered."""
        self._auth_deadlines.discard(session)

    def awaiting_auth(self, session: Session, auth_within: float) -> None:
        """An ``auth`` failed but the connection stays open (a dependency was
        unavailable): the client has ``auth_within`` s to try again."""
        if session in self._open:
            self._auth_deadlines.add(session, auth_within)

    async def authenticate(self, session: Session, identity: Identity) -> None:
        """Take a slot for the user and register the session for fan-out,
        until its token's ``exp``.

        Raises TooManyConnections when the user holds the maximum. A session
        that closed while its slot was being taken gives the slot back.
        """
        user_id = identity.user_id
        started = time.monotonic()
        if not await self._slots.acquire(user_id, session.connection_id):
            raise TooManyConnections()
        if self.registry.disconnected_since(user_id, started):  # during the claim
            await self._slots.release(user_id, session.connection_id)
            raise DisconnectedByServer()  # before presence: never announced online
        try:
            await self._presence.connected(user_id)
        except Exception:  # the slot goes back, or the user could be locked out
            await self._release_quietly(user_id, session.connection_id)
            raise
        if session not in self._open:  # closed meanwhile
            await self._release(user_id, session.connection_id)
            return
        if self.registry.disconnected_since(user_id, started):  # during the presence call
            await self._release(user_id, session.connection_id)
            raise DisconnectedByServer()
        # nothing awaited from here on: once registered, deliveries may reach
        # the session, and the caller must answer auth_success first
        session.user_id = user_id
        session.expires_at = identity.expires_at
        self.registry.add(session)
        self.expiry.add(session, _seconds_until(identity.expires_at))
        self._metrics.connections.inc()
        self._pending_changed()
        if self.pending_watch is not None:
            self.pending_watch.authenticated()

    def refresh(self, session: Session, expires_at: float) -> None:
        """A refreshed token: the session lasts until its new ``exp``."""
        if session in self._open:
            session.expires_at = expires_at
            self.expiry.add(session, _seconds_until(expires_at))  # moves it

    def slow_consumer(self, session: Session) -> None:
        """Count a session closed for not reading (``tornchat_slow_consumers_closed``)."""
        self._metrics.slow_consumers.inc()

    def closed(self, session: Session) -> None:
        """Idempotent cleanup of everything a session is in."""
        was_open = session in self._open
        self._open.discard(session)
        self._auth_deadlines.discard(session)
        self._presence.forget(session)  # also a subscription that was still being read
        if self.registry.remove(session):
            assert session.user_id is not None
            self.expiry.discard(session)
            self._metrics.connections.dec()
            IOLoop.current().add_callback(self._release, session.user_id,
                                          session.connection_id)
            log.info("connection closed", extra={"connectionId": session.connection_id,
                                                 "userId": session.user_id})
        if was_open:
            self._pending_changed()

    async def _release(self, user_id: str, connection_id: str) -> None:
        """Give the slot back, then let presence see whether it was the last."""
        await self._slots.release(user_id, connection_id)
        await self._presence.disconnected(user_id)

    async def _release_quietly(self, user_id: str, connection_id: str) -> None:
        """:meth:`_release` while another error is on its way to the client."""
        try:
            await self._release(user_id, connection_id)
        except Exception:
            log.warning("giving back the slot of a failed auth failed", exc_info=True,
                        extra={"userId": user_id, "connectionId": connection_id})
