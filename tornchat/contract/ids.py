"""Collision-free, time-sortable string ids with a readable type prefix.

An id is ``<prefix>_`` followed by 26 Crockford base32 characters: 48 bits of
Unix milliseconds then 80 random bits (the ULID layout), so ids sort by
creation time and never collide across processes or hosts.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """Return a new id such as ``msg_01HZX...``; thread-safe."""
    millis = time.time_ns() // 1_000_000
    entropy = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_base32((millis << 80) | entropy, 26)}"
