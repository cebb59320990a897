"""Receiver-side ordering of ``new_message`` by ``seq``, per conversation.

Messages of one conversation may be stored by different threads, workers or
instances and reach this process out of order. The sequencer releases them in
``seq`` order: a message that leaves a gap is held until the gap fills or
``hold_seconds`` pass, then released anyway (a message is never dropped for
being late; it is only dropped when it is a duplicate of one already
released). A conversation seen for the first time at ``seq > 1`` is held for
the same window, in case lower numbers are in flight.

Pure logic with an injectable clock; the caller (IOLoop thread) schedules a
wake-up at :meth:`next_deadline` and calls :meth:`expire`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
_RECENT_WINDOW = 1024


@dataclass
class _Conversation(Generic[T]):
    last: int | None = None
    pending: dict[int, tuple[float, T]] = field(default_factory=dict)
    released: set[int] = field(default_factory=set)


class Sequencer(Generic[T]):
    def __init__(self, hold_seconds: float = 0.05, capacity: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._hold = hold_seconds
        self._capacity = capacity
        self._clock = clock
        self._conversations: OrderedDict[str, _Conversation[T]] = OrderedDict()

    def offer(self, conversation_id: str, seq: int, item: T) -> list[T]:
        """Accept one message; return the items now releasable, in order."""
        state = self._state(conversation_id)
        if seq in state.released or seq in state.pending:
            return []
        if (state.last is None and seq > 1) or (state.last is not None and seq > state.last + 1):
            state.pending[seq] = (self._clock(), item)
            return []
        if state.last is not None and seq <= state.last:
            self._mark_released(state, seq)
            return [item]
        return self._release_from(state, seq, item)

    def expire(self) -> list[T]:
        """Release messages whose hold has run out (and what follows them)."""
        now = self._clock()
        ready: list[T] = []
        for state in self._conversations.values():
            while state.pending:
                first = min(state.pending)
                arrived, item = state.pending[first]
                if now - arrived < self._hold:
                    break
                del state.pending[first]
                ready.extend(self._release_from(state, first, item))
        return ready

    def next_deadline(self) -> float | None:
        """Clock time of the earliest hold expiry, or None when nothing waits."""
        arrivals = [arrived for state in self._conversations.values()
                    for arrived, _ in state.pending.values()]
        return min(arrivals) + self._hold if arrivals else None

    def _release_from(self, state: _Conversation[T], seq: int, item: T) -> list[T]:
        ready = [item]
        self._mark_released(state, seq)
        state.last = seq if state.last is None else max(state.last, seq)
        while state.last + 1 in state.pending:
            state.last += 1
            ready.append(state.pending.pop(state.last)[1])
            self._mark_released(state, state.last)
        return ready

    @staticmethod
    def _mark_released(state: _Conversation[T], seq: int) -> None:
        state.released.add(seq)
        if len(state.released) > 2 * _RECENT_WINDOW and state.last is not None:
            floor = state.last - _RECENT_WINDOW
            state.released = {s for s in state.released if s > floor}

    def _state(self, conversation_id: str) -> _Conversation[T]:
        state = self._conversations.get(conversation_id)
        if state is None:
            state = self._conversations[conversation_id] = _Conversation()
            if len(self._conversations) > self._capacity:
                self._evict_one()
        else:
            self._conversations.move_to_end(conversation_id)
        return state

    def _evict_one(self) -> None:
        for key, state in self._conversations.items():
            if not state.pending:
                del self._conversations[key]
                return
