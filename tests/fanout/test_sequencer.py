"""Receiver-side ordering: the sequencer's contract, with a fake clock."""

from __future__ import annotations

from tornchat.fanout.sequencer import Sequencer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[Sequencer[str], Clock]:
    clock = Clock()
    return Sequencer(hold_seconds=0.05, clock=clock), clock


def test_in_order_messages_pass_straight_through():
    seq, _ = make()
    assert seq.offer("c", 1, "m1") == ["m1"]
    assert seq.offer("c", 2, "m2") == ["m2"]
    assert seq.next_deadline() is None


def test_a_gap_holds_later_messages_until_it_fills():
    seq, _ = make()
    seq.offer("c", 1, "m1")
    assert seq.offer("c", 3, "m3") == []
    assert seq.offer("c", 4, "m4") == []
    assert seq.offer("c", 2, "m2") == ["m2", "m3", "m4"]


def test_a_gap_that_never_fills_is_skipped_after_the_hold():
    seq, clock = make()
    seq.offer("c", 1, "m1")
    seq.offer("c", 3, "m3")
    assert seq.next_deadline() == clock.now + 0.05
    clock.now += 0.049
    assert seq.expire() == []
    clock.now += 0.002
    assert seq.expire() == ["m3"]
    assert seq.offer("c", 4, "m4") == ["m4"]


def test_a_late_message_is_still_delivered_but_a_duplicate_is_not():
    seq, clock = make()
    seq.offer("c", 1, "m1")
    seq.offer("c", 3, "m3")
    clock.now += 1
    seq.expire()
    assert seq.offer("c", 2, "m2-late") == ["m2-late"]
    assert seq.offer("c", 2, "m2-again") == []
    assert seq.offer("c", 3, "m3-again") == []


def test_first_sight_above_one_waits_for_lower_numbers_in_flight():
    seq, clock = make()
    assert seq.offer("c", 8, "m8") == []
    assert seq.offer("c", 7, "m7") == []
    clock.now += 0.06
    assert seq.expire() == ["m7", "m8"]


def test_conversations_are_independent():
    seq, _ = make()
    seq.offer("a", 1, "a1")
    assert seq.offer("a", 3, "a3") == []
    assert seq.offer("b", 1, "b1") == ["b1"]


def test_below_the_first_released_seq_is_late_not_duplicate():
    seq, clock = make()
    seq.offer("c", 5, "m5")
    clock.now += 0.06
    assert seq.expire() == ["m5"]
    assert seq.offer("c", 3, "m3") == ["m3"]
    assert seq.offer("c", 3, "m3-again") == []
    assert seq.offer("c", 5, "m5-again") == []


def test_the_next_deadline_is_the_earliest_hold_still_waiting():
    seq, clock = make()
    seq.offer("a", 1, "a1")
    seq.offer("a", 3, "a3")  # held at 100.0
    clock.now = 100.01
    seq.offer("b", 1, "b1")
    seq.offer("b", 3, "b3")  # held at 100.01
    assert seq.next_deadline() == 100.05
    assert seq.offer("a", 2, "a2") == ["a2", "a3"]  # a's hold is over: b's is next
    assert seq.next_deadline() == 100.06
    clock.now = 100.07
    assert seq.expire() == ["b3"]
    assert seq.next_deadline() is None
