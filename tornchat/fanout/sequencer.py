"""Receiver-side ordering of ``new_message`` by ``seq``, per conversation.

Messages of one conversation may be stored by different threads, workers or
instances and reach this process out of order. The sequencer releases them in
``seq`` order: a message that leaves a gap is held until the gap fills or
``hold_seconds`` pass, then released anyway (a message is never dropped for
being late; it is only dropped when it is a duplicate of one already
released). A conversation seen for the first time at ``seq > 1`` is held for
the same window, in case lower numbers are in flight; anything below the first
released ``seq`` was never delivered here and is delivered when it comes.
Bookkeeping per conversation is a few integers plus bounded sets.

Pure logic with an injectable clock; the caller (IOLoop thread) schedules a
wake-up at :meth:`next_deadline` and calls :meth:`expire`. The holds are
kept in a heap by arrival, so finding the next deadline, which the caller
does after every message, does not scan every held message: under load,
when many messages are held, that scan was 3-5 % of a worker's CPU
(py-spy, `loadtest.bench --profile` at 1,000 msg/s x 10), growing with
the very backlog it served.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
_RECENT_WINDOW = 1024


@dataclass
class _Conversation(Generic[T]):
    floor: int | None = None  # the first seq released here; nothing below it was
    last: int | None = None  # the highest seq released here
    pending: dict[int, tuple[float, T]] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)  # gaps jumped over, may still come
    late: set[int] = field(default_factory=set)  # released seqs below the floor


class Sequencer(Generic[T]):
    def __init__(self, hold_seconds: float = 0.05, capacity: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._hold = hold_seconds
        self._capacity = capacity
        self._clock = clock
        self._conversations: OrderedDict[str, _Conversation[T]] = OrderedDict()
        self._waiting: set[str] = set()  # conversations with held messages
        #: (arrival, conversation, seq) of every hold; entries whose message was
        #: released meanwhile are dropped when they reach the top
        self._holds: list[tuple[float, str, int]] = []

    def offer(self, conversation_id: str, seq: int, item: T) -> list[T]:
        """Accept one message; return the items now releasable, in order."""
        state = self._state(conversation_id)
        if seq in state.pending:
            return []
        if state.last is not None and seq <= state.last:
            return [item] if self._take_late(state, seq) else []
        if (state.last is None and seq > 1) or (state.last is not None and seq > state.last + 1):
            arrived = self._clock()
            state.pending[seq] = (arrived, item)
            heapq.heappush(self._holds, (arrived, conversation_id, seq))
            self._waiting.add(conversation_id)
            return []
        ready = self._release_from(state, seq, item)
        if not state.pending:
            self._waiting.discard(conversation_id)
        return ready

    def expire(self) -> list[T]:
        """Release messages whose hold has run out (and what follows them)."""
        now = self._clock()
        ready: list[T] = []
        for conversation_id in list(self._waiting):
            state = self._conversations[conversation_id]
            while state.pending:
                first = min(state.pending)
                arrived, item = state.pending[first]
                if now - arrived < self._hold:
                    break
                del state.pending[first]
                ready.extend(self._release_from(state, first, item))
            if not state.pending:
                self._waiting.discard(conversation_id)
        return ready

    def next_deadline(self) -> float | None:
        """Clock time of the earliest hold expiry, or None when nothing waits."""
        holds = self._holds
        while holds:
            arrived, conversation_id, seq = holds[0]
            state = self._conversations.get(conversation_id)
            held = state.pending.get(seq) if state is not None else None
            if held is not None and held[0] == arrived:
                return arrived + self._hold
            heapq.heappop(holds)  # released (or evicted) since: stale
        return None

    def _release_from(self, state: _Conversation[T], seq: int, item: T) -> list[T]:
        if state.floor is None:
            state.floor = seq
        elif state.last is not None and seq > state.last + 1:
            state.skipped.update(range(max(state.last + 1, seq - _RECENT_WINDOW), seq))
            _trim(state.skipped, seq)
        state.last = seq
        ready = [item]
        while state.last + 1 in state.pending:
            state.last += 1
            ready.append(state.pending.pop(state.last)[1])
        return ready

    @staticmethod
    def _take_late(state: _Conversation[T], seq: int) -> bool:
        """A seq at or below ``last``: deliver it once if it was never released."""
        assert state.floor is not None
        if seq < state.floor:
            if seq in state.late:
                return False
            state.late.add(seq)
            _trim(state.late, state.floor)
            return True
        if seq in state.skipped:
            state.skipped.discard(seq)
            return True
        return False

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


def _trim(seqs: set[int], top: int) -> None:
    """Keep the bookkeeping of one conversation bounded to a recent window."""
    if len(seqs) > _RECENT_WINDOW:
        floor = top - _RECENT_WINDOW
        seqs.difference_update([s for s in seqs if s < floor])
