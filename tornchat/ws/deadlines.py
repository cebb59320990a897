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


class DeadlineWheel(Generic[T]):
    def __init__(self, on_due: Callable[[T], None], resolution: float = RESOLUTION) -> None:
        self._on_due = on_due
        self._resolution = resolution
        self._buckets: dict[int, set[T]] = {}
        self._bucket_of: dict[T, int] = {}
        #: a heap of the buckets' keys, one each: a bucket, emptied or not, lives
        #: until its time, so a key is pushed once however often items come and go
        self._keys: list[int] = []
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
            heapq.heappush(self._keys, key)
        bucket.add(item)
        self._bucket_of[item] = key
        if self._timer_key is None or key < self._timer_key:
            self._arm(key)

    def discard(self, item: T) -> None:
        key = self._bucket_of.pop(item, None)
        if key is None:
            return
        self._buckets[key].discard(item)  # an emptied bucket stays until its time

    def close(self) -> None:
        """Forget every item and the timer; later adds are ignored."""
        self._closed = True
        if self._timer is not None:
            IOLoop.current().remove_timeout(self._timer)
        self._timer, self._timer_key = None, None
        self._buckets.clear()
        self._bucket_of.clear()
        self._keys.clear()

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
            bucket = self._buckets.pop(heapq.heappop(self._keys))
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
