"""Take TCP connections a few at a time, and none while too many wait to authenticate.

A flood of sockets that upgrade and never send ``auth`` costs a worker an
HTTP parse and an upgrade each. Refusing the excess with a 503
(:meth:`~tornchat.ws.handler.ChatSocketHandler.get`) still costs the parse.
Measured (docs/performance.md, "Connection floods"): 20,000 such refusals
in a few seconds took the authenticated users' p50 from 1 ms to 765 ms on
this 2-core machine. So the gate:

- while ``TORNCHAT_MAX_PENDING_CONNECTIONS`` sessions of a worker wait to
  authenticate, the worker takes its listening sockets off the event loop.
  New connections wait in the kernel's accept queue, at no cost to this
  worker; other workers sharing the socket take them. The worker starts
  again once the waiting ones have authenticated or timed out, below nine
  tenths of the cap;
- it accepts at most :data:`ACCEPTS_PER_TURN` connections per turn of the
  event loop, where Tornado's own handler takes up to 128. A burst of new
  connections then reaches the worker spread over many turns, between the
  users' messages, instead of as one long stretch of upgrades;
- while more than a quarter of the cap (at most :data:`CROWD_ABOVE`) waits
  (real clients authenticate within milliseconds; only a storm of them does that),
  or as many were accepted within a quarter of a second, and for :data:`CROWDED_FOR`
  seconds after, it takes new connections at
  :data:`CROWDED_ACCEPTS_PER_SECOND`, so a flood's upgrades are spread over
  time instead of saturating the worker in bursts. On top of that rate,
  every connection that authenticates lets the next one in at once
  (:meth:`AcceptGate.authenticated`). A reconnect storm (more than 64
  connections in a quarter of a second is a crowd too) is not a flood: its
  clients authenticate within a round trip, so it comes in as fast as the
  worker gets through it. Measured (docs/performance.md, "Reconnect
  storms"): 4,000 clients back in 3.9-4.4 s instead of 21-29 s at the
  crowded rate alone;
- while crowded, it also holds at most :data:`HANDSHAKES_WHILE_CROWDED`
  connections in their HTTP phase (accepted, the upgrade request not yet
  answered). A flood's clients, short of CPU themselves, send their requests
  in bursts: measured (docs/performance.md, "Connection floods"), 70-100
  accepted sockets became readable in one turn, and their parses, handlers
  and upgrades ran as one cascade of 16-37 ms turns, 120 ms in all, which the
  users' messages waited behind. Only connections accepted within the last
  :data:`HANDSHAKE_WINDOW` seconds count, so sockets that never send a
  request cannot hold the gate shut (Tornado drops them after 30 s).

Relies on ``TCPServer._sockets``, ``_handlers``, ``_handle_connection`` and
``HTTPServer._connections``
(fenced by tests/ws/test_tornado_internals.py): the gate takes over the
accept handlers Tornado installed. ``HTTPServer.stop`` pops and calls one
remover per listening socket, so while the gate is not reading them (resting
or paused) each keeps a remover that does nothing. IOLoop thread only.
"""

from __future__ import annotations

import collections
import errno
import functools
import logging
import socket
import time

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from tornchat.metrics import Metrics

log = logging.getLogger(__name__)

#: connections accepted per event-loop turn and listening socket
ACCEPTS_PER_TURN = 8
#: while crowded (see CROWD_ABOVE), new connections are taken at this rate per
#: worker, in bursts of ACCEPTS_PER_TURN, plus one for each connection that
#: authenticates
CROWDED_ACCEPTS_PER_SECOND = 200.0
#: seconds the slow rate outlasts the crowd: a flood's sessions time out
#: together, and the next wave must not come in at full speed right after
CROWDED_FOR = 10.0
#: a crowd: more waiting to authenticate than this (or a quarter of the cap, if
#: lower), or as many accepted within _WINDOW; the first upgrades of a flood
#: come in at full speed until then (at a quarter of the default cap, 250 of
#: them kept a worker busy for 430 ms)
CROWD_ABOVE = 64
#: while crowded, connections in their HTTP phase a worker holds before it takes more
HANDSHAKES_WHILE_CROWDED = 16
#: seconds an accepted connection counts as handshaking, at most
HANDSHAKE_WINDOW = 1.0
_WINDOW = 0.25  # seconds over which accepted connections are counted towards the crowd


class AcceptGate:
    def __init__(self, server: HTTPServer, cap: int, metrics: Metrics) -> None:
        self._server = server
        self._cap = cap
        self._reopen_below = max(1, cap * 9 // 10)
        self._crowded_above = min(cap // 4, CROWD_ABOVE)
        self._metrics = metrics
        self.paused = False
        self._crowded_until = 0.0
        self._window_start, self._window_accepts = 0.0, 0  # accepts in the last _WINDOW
        self._tokens = float(ACCEPTS_PER_TURN)
        self._refilled = time.monotonic()
        self._resting: object | None = None  # the timer of a rest while crowded
        self._reading = True  # the listening sockets are on the loop (Tornado's handlers now)
        self._accepted_at: collections.deque[float] = collections.deque()  # last HANDSHAKE_WINDOW
        self._stop_accepting()
        self._start_accepting()

    def pending(self, count: int) -> None:
        """``count`` sessions now wait to authenticate."""
        if count > self._crowded_above:
            self._crowded_until = time.monotonic() + CROWDED_FOR
        if not self.paused and count >= self._cap:
            self._stop_accepting()
            self.paused = True
            self._metrics.accept_pauses.inc()
            log.warning("not accepting connections: too many wait to authenticate",
                        extra={"pending": count, "limit": self._cap})
        elif self.paused and count < self._reopen_below:
            self.paused = False
            if self._resting is None:
                self._start_accepting()
            log.info("accepting connections again", extra={"pending": count})

    def authenticated(self) -> None:
        """While crowded, a connection that authenticates makes room for the
        next one (from the next loop turn; the budget holds at most
        ACCEPTS_PER_TURN), on top of the crowded rate. A reconnect storm's
        clients authenticate within a round trip, so it comes in as fast as
        the worker gets through it (measured, docs/performance.md, "Reconnect
        storms"). A flood's connections never authenticate: it still comes in
        at CROWDED_ACCEPTS_PER_SECOND, plus what the real clients' credits
        let in (the kernel's queue is not sorted: during a flood, a credit
        mostly admits a flood socket)."""
        if time.monotonic() >= self._crowded_until:
            return
        self._tokens = min(float(ACCEPTS_PER_TURN), self._tokens + 1.0)
        if self._resting is not None and not self.paused:
            IOLoop.current().remove_timeout(self._resting)
            self._rested()

    @property
    def resting(self) -> bool:
        """Crowded and out of budget: not reading the listening sockets until
        the crowded rate (or an authentication) allows another connection."""
        return self._resting is not None

    def _stop_accepting(self) -> None:
        server = self._server
        if not self._reading or server._stopped:
            return
        for fd in list(server._handlers):
            server._handlers.pop(fd)()
            server._handlers[fd] = _nothing_to_remove
        self._reading = False

    def _start_accepting(self) -> None:
        server = self._server
        if server._stopped or self._reading:
            return
        loop = IOLoop.current()
        for fd, sock in server._sockets.items():
            loop.add_handler(fd, functools.partial(self._accept, sock), IOLoop.READ)
            server._handlers[fd] = functools.partial(loop.remove_handler, fd)
        self._reading = True

    def _count_accept(self) -> None:
        """Accepted connections count towards the crowd until their upgrade
        counts them as pending: a queue of thousands taken at full speed is
        a crowd before a single one has upgraded."""
        now = time.monotonic()
        self._accepted_at.append(now)
        self._forget_accepts(now)
        if now - self._window_start >= _WINDOW:
            self._window_start, self._window_accepts = now, 0
        self._window_accepts += 1
        if self._window_accepts > self._crowded_above:
            self._crowded_until = now + CROWDED_FOR

    def _forget_accepts(self, now: float) -> None:
        accepted_at = self._accepted_at
        while accepted_at and accepted_at[0] <= now - HANDSHAKE_WINDOW:
            accepted_at.popleft()

    def handshaking(self) -> int:
        """Connections in their HTTP phase that were accepted within the last
        HANDSHAKE_WINDOW seconds (``HTTPServer._connections`` holds each
        until its upgrade detaches it, or until it closes)."""
        self._forget_accepts(time.monotonic())
        return min(len(self._server._connections), len(self._accepted_at))

    def _budget(self) -> int:
        """Connections this turn may take: ACCEPTS_PER_TURN, or while crowded
        what the rate has refilled since the last turn, and no more than
        leaves HANDSHAKES_WHILE_CROWDED in their HTTP phase."""
        now = time.monotonic()
        if now >= self._crowded_until:
            return ACCEPTS_PER_TURN
        self._tokens = min(float(ACCEPTS_PER_TURN), self._tokens
                           + (now - self._refilled) * CROWDED_ACCEPTS_PER_SECOND)
        self._refilled = now
        return min(int(self._tokens), HANDSHAKES_WHILE_CROWDED - self.handshaking())

    def _rest(self) -> None:
        """Crowded and out of budget: stop reading the listening sockets until
        the rate allows another connection."""
        if self._resting is not None or self.paused:
            return
        self._stop_accepting()
        self._resting = IOLoop.current().call_later(1.0 / CROWDED_ACCEPTS_PER_SECOND,
                                                    self._rested)

    def _rested(self) -> None:
        self._resting = None
        if not self.paused:
            self._start_accepting()

    def _accept(self, sock: socket.socket, fd: int, events: int) -> None:
        budget = self._budget()
        if budget < 1:
            self._rest()
            return
        crowded = time.monotonic() < self._crowded_until
        for _ in range(budget):
            try:
                connection, address = sock.accept()
            except BlockingIOError:  # the queue is empty: the budget is kept
                return
            except ConnectionAbortedError:  # gone before we took it
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    log.error("cannot accept connections: out of file descriptors")
                    return
                raise
            if crowded:
                self._tokens -= 1
            self._server._handle_connection(connection, address)
            self._count_accept()


def _nothing_to_remove() -> None:
    """What ``HTTPServer.stop`` calls for a listening socket the gate is not reading."""
