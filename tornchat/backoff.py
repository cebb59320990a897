"""Capped exponential backoff: the one delay policy of every reconnect and retry loop.

Why one class: the Redis subscriber thread, the bus publisher, the peer
announcement and the outbox relay all retry something that is down. They
wait the same way, so an outage looks the same in every log, and the bus can
reason about its peers' timing (a publisher holds back :data:`CAP` after a
reconnect because every subscriber retries on this same cap).

Contract: :meth:`Backoff.next` returns ``base``, ``2·base``, ``4·base``, …
never more than ``cap``, however long the outage; :meth:`Backoff.reset` after
a success starts over at ``base``. With ``jitter`` (the default) each delay is
drawn uniformly from [delay/2, delay], so workers that lost Redis together
do not reconnect in lockstep; without it the delays are exact.

Thread rule: an instance belongs to the one loop (and thread) that retries;
this module holds only constants and imports nothing of tornchat.
"""

from __future__ import annotations

import random

#: the first delay, in seconds
BASE = 0.1
#: no delay is longer, in seconds
CAP = 2.0


class Backoff:
    """Delays that double from ``base`` up to ``cap`` (seconds), optionally jittered."""

    def __init__(self, base: float = BASE, cap: float = CAP, *, jitter: bool = True) -> None:
        self._base = base
        self._cap = cap
        self._jitter = jitter
        self._attempt = 0

    def next(self) -> float:
        """The delay before the next attempt (and count this one)."""
        delay = min(self._cap, self._base * 2 ** self._attempt)
        if delay < self._cap:  # at the cap the exponent stops: 2.0 ** 1024 overflows
            self._attempt += 1
        return delay * random.uniform(0.5, 1.0) if self._jitter else delay

    def reset(self) -> None:
        """After a success: the next delay is ``base`` again."""
        self._attempt = 0
