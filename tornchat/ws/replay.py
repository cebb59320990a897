"""Exactly once per connection: what a connection was given of each
conversation, and the live messages held back while a ``sync`` replays.

A ``sync`` promises that after it the connection receives every message of
each listed conversation above the client's known ``seq`` exactly once, in
``seq`` order, replayed or live. Two things could break that: a live message
arriving while the replay is read from the database (it would overtake the
replay), and a message delivered both live and by the replay. So:

- while a sync of a conversation is being read, its live messages to this
  connection are held (:meth:`DeliveryLog.hold`) and written after the
  replay, in the order they arrived;
- from authentication until the connection's first frame is handled, or
  ``TORNCHAT_SYNC_HOLD`` (0.25 s) passes, every live message is held
  (:meth:`DeliveryLog.hold_all`): a client that sends ``sync`` as soon as it
  has ``auth_success`` (or right behind ``auth``) gets no live message ahead
  of its replay. If that frame is a ``sync``, the held messages of its
  conversations stay held until the replay is written; the rest, or all of
  them for any other frame or when the hold runs out, are written at once (a
  client that only listens waits at most the hold, once per connection);
- every message written to the connection, live, replayed or acknowledged
  to its sender, is recorded (:meth:`DeliveryLog.admit`), and one already
  written is dropped, whichever path brings it again.

The record is a few ``[low, high]`` spans of seq per conversation: live
delivery is in order (the dispatcher's sequencer), so a conversation costs
one span unless a message was skipped. Spans past :data:`MAX_SPANS` drop the
oldest, and past :data:`MAX_CONVERSATIONS` the conversation first recorded
goes (a later sync of it could then repeat what this connection had), so a
connection's record stays bounded; the log is dropped again when the hold
after auth ends with nothing in it, so an idle connection pays nothing.

Thread rule: IOLoop thread only (the handler's).
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_SPANS = 16
MAX_CONVERSATIONS = 256


class DeliveryLog:
    __slots__ = ("_all", "_held", "_spans")

    def __init__(self) -> None:
        self._spans: dict[str, list[int]] = {}  # flattened [low0, high0, low1, high1, ...]
        self._held: dict[str, list[tuple[int, str]]] | None = None
        self._all: list[tuple[str, int, str]] | None = None

    def __bool__(self) -> bool:
        """False while it records nothing and holds nothing (it may be dropped)."""
        return bool(self._spans) or self._held is not None or self._all is not None

    def admit(self, conversation_id: str, seq: int) -> bool:
        """Record ``seq`` as written now; False if it was written before."""
        spans = self._spans.get(conversation_id)
        if spans is None:
            if len(self._spans) >= MAX_CONVERSATIONS:
                del self._spans[next(iter(self._spans))]
            self._spans[conversation_id] = [seq, seq]
            return True
        high = spans[-1]
        if seq == high + 1:  # the common case: the next one
            spans[-1] = seq
            return True
        if seq > high:
            spans += (seq, seq)
            del spans[:-2 * MAX_SPANS]
            return True
        return _insert(spans, seq)

    def unseen(self, held: Iterable[tuple[str, int, str]]) -> list[str]:
        """The frames of ``held`` (conversation, seq, frame) not written before,
        recorded as written now."""
        return [frame for conversation_id, seq, frame in held
                if self.admit(conversation_id, seq)]

    def hold(self, conversation_id: str, seq: int, frame: str) -> bool:
        """Keep a live message back if a sync of its conversation is replaying
        (or the connection's first frame is awaited)."""
        if self._all is not None:
            self._all.append((conversation_id, seq, frame))
            return True
        held = self._held
        if held is None:
            return False
        waiting = held.get(conversation_id)
        if waiting is None:
            return False
        waiting.append((seq, frame))
        return True

    @property
    def holding_all(self) -> bool:
        return self._all is not None

    def hold_all(self) -> None:
        """Authenticated: hold every live message until :meth:`release_all`."""
        self._all = []

    def release_all(self, syncing: Iterable[str] = ()) -> list[tuple[str, int, str]]:
        """The first frame came (or none in time): the held messages to write
        now; those of the ``syncing`` conversations stay held for the replay."""
        held, self._all = self._all or [], None
        self.begin(syncing)
        gate = self._held or {}
        now = []
        for conversation_id, seq, frame in held:
            waiting = gate.get(conversation_id)
            if waiting is None:
                now.append((conversation_id, seq, frame))
            else:
                waiting.append((seq, frame))
        return now

    def begin(self, conversation_ids: Iterable[str]) -> None:
        """A sync of these conversations starts: hold their live messages
        (what is held for them already stays held)."""
        held = self._held if self._held is not None else {}
        for conversation_id in conversation_ids:
            held.setdefault(conversation_id, [])
        self._held = held or None

    def end(self) -> list[tuple[str, int, str]]:
        """The sync is replayed: the held messages, (conversation, seq, frame),
        in arrival order per conversation; live messages flow again."""
        held, self._held = self._held or {}, None
        return [(conversation_id, seq, frame) for conversation_id, waiting in held.items()
                for seq, frame in waiting]


def _insert(spans: list[int], seq: int) -> bool:
    """Add ``seq`` below the highest span (a message late past the sequencer's
    hold), merging spans that touch; False if a span holds it already. In
    place, without sorting: under load, when holds run out, this runs for many
    messages (py-spy: 4-7 % of a worker at 1,000 msg/s x 10 with the
    sort-and-rebuild it replaces)."""
    end = len(spans)
    index = 0
    while index < end and spans[index + 1] < seq:  # past the spans wholly below
        index += 2
    if index < end and spans[index] <= seq:  # within the span that ends at or above it
        return False
    joins_below = index > 0 and spans[index - 1] == seq - 1
    joins_above = index < end and spans[index] == seq + 1
    if joins_below and joins_above:
        spans[index - 1] = spans[index + 1]
        del spans[index:index + 2]
    elif joins_below:
        spans[index - 1] = seq
    elif joins_above:
        spans[index] = seq
    else:
        spans[index:index] = (seq, seq)
        del spans[:-2 * MAX_SPANS]
    return True
