"""Sessions end when their token expires, unless refreshed (PROTOCOL §14).

One wheel per process instead of a timer per connection: sessions wait in
buckets of :data:`BUCKET_SECONDS` by their ``exp``, and one timer a second
looks at the buckets that have begun, ending each session whose
``expires_at`` has passed and keeping the others for the next tick. A
connection costs a place in one set (tokens issued over hours share few
buckets), not a timer object, so ten thousand idle connections stay about as
cheap as before. A ``refresh`` moves a session to its new bucket. A session
ends within a second after its ``exp``; clients should still refresh well
before it (at 80% of the token's life, say): a refresh is read only after the
connection's previous frame is handled.

Thread rule: IOLoop thread only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from tornado.ioloop import PeriodicCallback

log = logging.getLogger(__name__)

BUCKET_SECONDS = 8


class Expiring(Protocol):
    expires_at: float

    def expire(self) -> None:
        """The token ran out: tell the client and close (4001)."""


def _bucket(expires_at: float) -> int:
    return int(expires_at // BUCKET_SECONDS) * BUCKET_SECONDS


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
        self._buckets.setdefault(_bucket(session.expires_at), set()).add(session)

    def discard(self, session: Expiring) -> None:
        start = _bucket(session.expires_at)
        bucket = self._buckets.get(start)
        if bucket is not None:
            bucket.discard(session)
            if not bucket:
                del self._buckets[start]

    def move(self, session: Expiring, expires_at: float) -> None:
        """A refresh: the session now lasts until ``expires_at``."""
        self.discard(session)
        session.expires_at = expires_at
        self.add(session)

    def tick(self) -> None:
        """End the sessions whose ``exp`` has passed."""
        now = self._clock()
        for start in [start for start in self._buckets if start <= now]:
            bucket = self._buckets[start]
            due = [session for session in bucket if session.expires_at <= now]
            bucket.difference_update(due)
            if not bucket:
                del self._buckets[start]
            for session in due:
                try:
                    session.expire()
                except Exception:  # one failing session must not keep the rest alive
                    log.exception("ending an expired session failed")
