"""The send timestamp carried inside a message's content.

Delivery latency must be measured from when the message was (meant to be)
sent, not from when a receiver happened to call ``recv``: a stalled server
would otherwise look fast. The sender puts its wall-clock send time into the
opaque ``content``; every receiver subtracts it from its own clock on arrival.
Sender and receiver share one machine (and, in the benchmark, one process),
so ``time.time()`` is a valid common clock.

Format: ``t=<epoch seconds with 6 decimals>;<padding>``.
"""

from __future__ import annotations

import time

PREFIX = "t="


def stamp(sent_at: float | None = None, padding: str = "x" * 32) -> str:
    """Content for a message sent at ``sent_at`` (default: now)."""
    return f"{PREFIX}{time.time() if sent_at is None else sent_at:.6f};{padding}"


def sent_at(content: object) -> float | None:
    """The send time carried by ``content``, or None if it carries none."""
    if not isinstance(content, str) or not content.startswith(PREFIX):
        return None
    end = content.find(";", 2)
    try:
        return float(content[2:end if end > 0 else None])
    except ValueError:
        return None


def latency_ms(content: object, now: float | None = None) -> float | None:
    """Milliseconds from the stamp in ``content`` to ``now`` (default: now)."""
    start = sent_at(content)
    if start is None:
        return None
    return ((time.time() if now is None else now) - start) * 1000.0
