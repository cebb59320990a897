"""Sessions end when their token expires, unless refreshed (PROTOCOL §14).

One wheel per process instead of a timer per connection: sessions wait in
per-second buckets, and one timer a second looks at the buckets that are
due. A connection costs a place in one set, not a timer object, so ten
thousand idle connections stay as cheap as before. A ``refresh`` moves a
session to its new second; the wheel checks each due session's current
``expires_at`` before ending it, so a session moved later is never ended
early. Resolution: a session ends within a second after its ``exp``.

Thread rule: IOLoop thread only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

from tornado.ioloop import PeriodicCallback


class Expiring(Protocol):
    expires_at: float

    def expire(self) -> None:
        """The token ran out: tell the client and close (4001)."""


class ExpiryWheel:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._buckets: dict[int, set[Expiring]] = {}
        self._timer = PeriodicCallback(self.tick, 1000)

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    def add(self, session: Expiring) -> None:
        """Watch ``session`` until its ``expires_at`` (set it first)."""
        self._buckets.setdefault(math.ceil(session.expires_at), set()).add(session)

    def discard(self, session: Expiring) -> None:
        second = math.ceil(session.expires_at)
        bucket = self._buckets.get(second)
        if bucket is not None:
            bucket.discard(session)
            if not bucket:
                del self._buckets[second]

    def move(self, session: Expiring, expires_at: float) -> None:
        """A refresh: the session now lasts until ``expires_at``."""
        self.discard(session)
        session.expires_at = expires_at
        self.add(session)

    def tick(self) -> None:
        """End the sessions whose second has come."""
        now = self._clock()
        for second in [s for s in self._buckets if s <= now]:
            for session in self._buckets.pop(second):  # expires_at <= second <= now
                session.expire()
