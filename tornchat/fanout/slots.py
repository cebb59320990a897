"""Connection slots: the per-user live-connection limit (contract: 5).

``InMemorySlots`` counts this process's connections; a cluster-wide
implementation (Redis) keeps the same interface so the limit holds across
workers and instances. ``refresh`` is called by the heartbeat so shared
entries can expire when a process dies without releasing them.
"""

from __future__ import annotations

import abc
from collections import defaultdict


class ConnectionSlots(abc.ABC):
    @abc.abstractmethod
    async def acquire(self, user_id: str, connection_id: str) -> bool:
        """Take a slot; False when the user already holds the maximum."""

    @abc.abstractmethod
    async def release(self, user_id: str, connection_id: str) -> None:
        """Give a slot back (idempotent)."""

    @abc.abstractmethod
    async def count(self, user_id: str) -> int:
        """Live connections the user holds (cluster-wide where the slots are)."""

    async def refresh(self, holders: list[tuple[str, str]]) -> None:
        """Keep the given (user, connection) slots alive; no-op in memory."""
        return None

    async def close(self) -> None:
        return None


class InMemorySlots(ConnectionSlots):
    """Slots of one process. IOLoop thread only."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held: defaultdict[str, set[str]] = defaultdict(set)

    async def acquire(self, user_id: str, connection_id: str) -> bool:
        held = self._held[user_id]
        if connection_id in held:
            return True
        if len(held) >= self._limit:
            return False
        held.add(connection_id)
        return True

    async def count(self, user_id: str) -> int:
        return len(self._held.get(user_id, ()))

    async def release(self, user_id: str, connection_id: str) -> None:
        held = self._held.get(user_id)
        if held is None:
            return
        held.discard(connection_id)
        if not held:
            del self._held[user_id]
