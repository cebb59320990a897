"""A token bucket: the per-connection frame rate limit."""

from __future__ import annotations

import time
from collections.abc import Callable

#: after a refusal, seconds' worth of tokens that must build up before the
#: next frame is taken (at least one token, at most the burst)
COOLDOWN = 0.5


class TokenBucket:
    """Allows ``burst`` frames at once and ``rate`` per second sustained.

    After a refusal it refuses until :data:`COOLDOWN` seconds' worth of
    tokens have built up again. The frames a client pipelined behind a
    refused one arrive within that time and are refused too, so a client
    that retries its refused sends oldest first keeps their order. Without
    it, a bucket that hovered at one token took and refused frames by turns:
    a JavaScript client's 40th send was refused, its 41st to 43rd stored,
    then the 40th after them (a CI run on a busy machine). The JavaScript
    client's first pause after a refusal (0.5-1 s) outlasts the cool-down.
    """

    def __init__(self, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._resume_at = min(self._burst, max(1.0, rate * COOLDOWN))
        self._cooling = False  # refused one; refusing until _resume_at tokens are back

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._cooling and self._tokens < self._resume_at:
            return False
        self._cooling = False
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self._cooling = True
        return False
