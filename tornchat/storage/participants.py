"""The store's cache of who belongs to a conversation.

A conversation's participant set never changes once created, so it can be
cached without invalidation; the cache is bounded (least recently used goes
first) so that a long-running worker's memory does not grow with every
conversation it ever saw.

Thread rule: lock-protected and never touches the database, so any thread may
use it, the IOLoop included (:meth:`ChatStore.cached_participants`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class ParticipantCache:
    """Bounded LRU of conversation → participants (sets never change)."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, conversation_id: str) -> tuple[str, ...] | None:
        with self._lock:
            found = self._items.get(conversation_id)
            if found is not None:
                self._items.move_to_end(conversation_id)
            return found

    def put(self, conversation_id: str, participants: tuple[str, ...]) -> None:
        with self._lock:
            self._items[conversation_id] = participants
            self._items.move_to_end(conversation_id)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
