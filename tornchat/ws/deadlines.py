"""Deadlines of many connections in buckets on one timer, not a timer each:
the auth deadline of a new connection, and the end of a session at its
token's ``exp`` (:class:`tornchat.ws.sessions.Sessions` holds one wheel of
each).

Every connection that has not authenticated yet must be closed at its
deadline (``TORNCHAT_AUTH_TIMEOUT``, spread a little, see
:func:`tornchat.ws.sessions.auth_deadline`). A timer per connection is an
asyncio ``TimerHandle`` with its context, the callback's bound methods and
Tornado's wrapper: six objects the cycle collector tracks, per connection.
Under a flood of connections that never authenticate, a worker holds
``TORNCHAT_MAX_PENDING_CONNECTIONS`` of them, and every full collection walks
them all (docs/performance.md, "Connection floods"). Here a waiting
connection costs an entry in a set and in a dict, which the collector does
not track as objects of their own.

Deadlines are rounded up to the wheel's resolution (never early); items due
in the same bucket are handed to ``on_due`` together, in one timer callback,
and the timer is armed only for the earliest bucket that exists, so a wheel
of sessions whose tokens last an hour does not wake every second. Delays
run on the event loop's monotonic clock.
Thread rule: IOLoop thread only.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable
from typing import Generic, TypeVar

from tornado.ioloop import IOLoop

log = logging.getLogger(__name__)

T = TypeVar("T")

#: seconds per bucket: how late past its deadline an item may be handed over
RESOLUTION = 0.1
_SLACK = 64  # queued keys without a bucket tolerated before the heap is rebuilt


class DeadlineWheel(Generic[T]):
    def __init__(self, on_due: Callable[[T], None], resolution: float = RESOLUTION) -> None:
        self._on_due = on_due
        self._resolution = resolution
        self._buckets: dict[int, set[T]] = {}
        self._bucket_of: dict[T, int] = {}
        #: a heap of bucket keys, each pushed once until its time (``_queued``),
        #: however often items come and go; an emptied bucket's set is freed at
        #: once (sessions refreshed out of an hour-long wheel leave no sets behind)
        self._keys: list[int] = []
        self._queued: set[int] = set()
        self._timer: object | None = None
        self._timer_key: int | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._bucket_of)

    def __contains__(self, item: object) -> bool:
        return item in self._bucket_of

    def add(self, item: T, delay: float) -> None:
        """Hand ``item`` to ``on_due`` ``delay`` seconds from now (or up to one
        resolution later), unless it is discarded first. Once the wheel is
        closed, nothing is added (an upgrade finishing while the application
        closes must not arm a timer again)."""
        self.discard(item)
        if self._closed:
            return
        key = math.ceil((IOLoop.current().time() + delay) / self._resolution)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = set()
            if key not in self._queued:
                self._queued.add(key)
                heapq.heappush(self._keys, key)
        bucket.add(item)
        self._bucket_of[item] = key
        if self._timer_key is None or key < self._timer_key:
            self._arm(key)

    def discard(self, item: T) -> None:
        key = self._bucket_of.pop(item, None)
        if key is None:
            return
        bucket = self._buckets[key]
        bucket.discard(item)
        if not bucket:
            del self._buckets[key]  # its key stays queued until its time...
            if len(self._keys) > 2 * len(self._buckets) + _SLACK:
                self._compact()  # ...unless most queued keys have no bucket left

    def _compact(self) -> None:
        self._keys = list(self._buckets)
        heapq.heapify(self._keys)
        self._queued = set(self._keys)

    def close(self) -> None:
        """Forget every item and the timer; later adds are ignored."""
        self._closed = True
        if self._timer is not None:
            IOLoop.current().remove_timeout(self._timer)
        self._timer, self._timer_key = None, None
        self._buckets.clear()
        self._bucket_of.clear()
        self._keys.clear()
        self._queued.clear()

    def _arm(self, key: int) -> None:
        loop = IOLoop.current()
        if self._timer is not None:
            loop.remove_timeout(self._timer)
        self._timer_key = key
        self._timer = loop.call_at(key * self._resolution, self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_key = None, None
        now = IOLoop.current().time()
        due: list[T] = []
        while self._keys and self._keys[0] * self._resolution <= now:
            key = heapq.heappop(self._keys)
            self._queued.discard(key)
            bucket = self._buckets.pop(key, set())
            for item in bucket:
                del self._bucket_of[item]
            due.extend(bucket)
        if self._keys:
            self._arm(self._keys[0])
        for item in due:
            try:
                self._on_due(item)
            except Exception:  # one failing item must not keep the others waiting
                log.exception("handling a due deadline failed")
