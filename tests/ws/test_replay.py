"""The per-connection delivery log behind ``sync``'s exactly-once promise."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tornchat.ws.replay import MAX_SPANS, DeliveryLog


def test_each_seq_is_admitted_once_whatever_order_it_comes_in():
    log = DeliveryLog()
    assert [log.admit("c", seq) for seq in (1, 2, 3)] == [True] * 3
    assert [log.admit("c", seq) for seq in (2, 3, 1)] == [False] * 3
    assert log.admit("c", 7)  # a gap: a new span
    assert log.admit("c", 5)  # late, below the newest: inserted
    assert [log.admit("c", seq) for seq in (5, 7, 4, 6)] == [False, False, True, True]
    assert not any(log.admit("c", seq) for seq in range(1, 8))
    assert log.admit("other", 1)  # conversations are apart


def test_the_record_stays_bounded_by_dropping_the_oldest_spans():
    log = DeliveryLog()
    for seq in range(1, 4 * MAX_SPANS, 2):  # every other seq: one span each
        log.admit("c", seq)
    assert not log.admit("c", 4 * MAX_SPANS - 1)  # the newest are remembered
    assert log.admit("c", 1)  # the oldest were let go


def test_a_sync_holds_its_conversations_and_releases_in_arrival_order():
    log = DeliveryLog()
    log.begin(["c"])
    assert log.hold("c", 9, "nine") and log.hold("c", 10, "ten")
    assert not log.hold("other", 1, "x")  # not syncing: written at once
    assert log.end() == [("c", 9, "nine"), ("c", 10, "ten")]
    assert not log.hold("c", 11, "eleven")


def test_after_auth_everything_is_held_until_the_first_frame():
    log = DeliveryLog()
    log.hold_all()
    assert log.holding_all
    assert log.hold("c", 5, "c5") and log.hold("d", 1, "d1") and log.hold("c", 6, "c6")
    now = log.release_all(syncing=["c"])  # the first frame is a sync of c
    assert now == [("d", 1, "d1")]
    assert not log.holding_all
    assert log.hold("c", 7, "c7")  # still held: c's replay is not written yet
    assert log.end() == [("c", 5, "c5"), ("c", 6, "c6"), ("c", 7, "c7")]


def test_an_empty_log_says_so():
    log = DeliveryLog()
    assert not log
    log.hold_all()
    assert log
    log.release_all()
    assert not log
    log.admit("c", 1)
    assert log


def _sorted_insert(spans: list[int], seq: int) -> None:
    """The former insertion (sort all spans with the new one, merge, keep the
    newest MAX_SPANS): the reference the in-place one must match."""
    pairs = sorted([*zip(spans[::2], spans[1::2], strict=True), (seq, seq)])
    merged: list[list[int]] = []
    for low, high in pairs:
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    spans[:] = [bound for pair in merged[-MAX_SPANS:] for bound in pair]


@given(st.lists(st.integers(min_value=1, max_value=80), min_size=1, max_size=120))
def test_late_seqs_are_recorded_exactly_as_sorting_and_merging_would(seqs):
    log = DeliveryLog()
    reference: list[int] = []
    for seq in seqs:
        admitted = log.admit("c", seq)
        expected = not any(reference[i] <= seq <= reference[i + 1]
                           for i in range(0, len(reference), 2))
        assert admitted == expected, (seq, reference)
        if expected:
            if not reference:
                reference = [seq, seq]
            elif seq == reference[-1] + 1:
                reference[-1] = seq
            elif seq > reference[-1]:
                reference += [seq, seq]
                del reference[:-2 * MAX_SPANS]
            else:
                _sorted_insert(reference, seq)
        assert log._spans["c"] == reference
