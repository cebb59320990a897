"""The one backoff of every retry loop: doubles from its base, stops at its cap,
starts over after a success, and jitters within [delay/2, delay] unless told not to."""

from __future__ import annotations

from tornchat.backoff import BASE, CAP, Backoff


def delays(backoff: Backoff, count: int) -> list[float]:
    return [backoff.next() for _ in range(count)]


def test_the_delay_doubles_from_the_base():
    assert delays(Backoff(0.25, 5.0, jitter=False), 4) == [0.25, 0.5, 1.0, 2.0]


def test_the_delay_never_exceeds_the_cap():
    assert delays(Backoff(0.25, 5.0, jitter=False), 8)[-4:] == [4.0, 5.0, 5.0, 5.0]


def test_a_long_outage_stays_at_the_cap():
    backoff = Backoff(jitter=False)
    assert set(delays(backoff, 5000)[-100:]) == {CAP}  # no overflow after many attempts


def test_reset_starts_over_at_the_base():
    backoff = Backoff(0.25, 5.0, jitter=False)
    delays(backoff, 6)
    backoff.reset()
    assert backoff.next() == 0.25


def test_the_defaults_are_a_tenth_of_a_second_up_to_two_seconds():
    assert (BASE, CAP) == (0.1, 2.0)
    assert delays(Backoff(jitter=False), 6) == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]


def test_jitter_keeps_each_delay_between_half_and_all_of_it():
    exact = delays(Backoff(jitter=False), 8)
    for _ in range(200):
        jittered = delays(Backoff(), 8)
        assert all(d / 2 <= j <= d for d, j in zip(exact, jittered, strict=True))


def test_jitter_spreads_the_delays():
    assert len({Backoff().next() for _ in range(50)}) > 1
