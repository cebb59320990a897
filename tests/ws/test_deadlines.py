"""Auth deadlines on one timer (tornchat.ws.deadlines): never early, at most a
bucket late, nothing handed over once discarded."""

from __future__ import annotations

import asyncio

from tornado.ioloop import IOLoop

from harness.ports import eventually
from tornchat.ws.deadlines import DeadlineWheel


class Recorder:
    def __init__(self) -> None:
        self.due: list[tuple[str, float]] = []

    def __call__(self, item: str) -> None:
        self.due.append((item, IOLoop.current().time()))


async def test_an_item_is_handed_over_at_its_deadline_and_not_before() -> None:
    record = Recorder()
    wheel: DeadlineWheel[str] = DeadlineWheel(record, resolution=0.05)
    started = IOLoop.current().time()
    wheel.add("a", 0.2)
    wheel.add("b", 0.1)
    added = IOLoop.current().time()
    assert len(wheel) == 2 and "a" in wheel
    # the one timer is set for the end of the earliest item's bucket
    assert wheel._timer_key is not None
    assert started + 0.1 <= wheel._timer_key * 0.05 <= added + 0.1 + 0.05
    await eventually(lambda: len(record.due) == 2, "both deadlines")
    assert [item for item, _ in record.due] == ["b", "a"]
    for (item, at), delay in zip(record.due, (0.1, 0.2), strict=True):
        assert at - started >= delay, (item, at - started)
    assert len(wheel) == 0


async def test_a_discarded_item_is_never_handed_over() -> None:
    record = Recorder()
    wheel: DeadlineWheel[str] = DeadlineWheel(record, resolution=0.05)
    wheel.add("kept", 0.1)
    wheel.add("authenticated", 0.1)
    wheel.discard("authenticated")
    wheel.discard("never added")
    await eventually(lambda: record.due, "the kept item's deadline")  # its bucket's one callback
    assert [item for item, _ in record.due] == ["kept"]


async def test_adding_again_moves_the_deadline() -> None:
    record = Recorder()
    wheel: DeadlineWheel[str] = DeadlineWheel(record, resolution=0.05)
    started = IOLoop.current().time()
    wheel.add("a", 0.05)
    wheel.add("a", 0.3)
    await eventually(lambda: record.due, "the moved deadline")
    assert [item for item, _ in record.due] == ["a"]
    assert record.due[0][1] - started >= 0.3


async def test_items_of_one_bucket_come_together_and_a_failing_one_stops_none() -> None:
    handed: list[int] = []

    def on_due(item: int) -> None:
        handed.append(item)
        if item == 3:
            raise RuntimeError("this one fails")

    wheel: DeadlineWheel[int] = DeadlineWheel(on_due, resolution=0.2)
    for item in range(10):
        wheel.add(item, 0.01)
    await eventually(lambda: len(handed) == 10, "every item of the bucket")
    assert sorted(handed) == list(range(10))


async def test_one_timer_serves_every_item_and_close_forgets_them() -> None:
    record = Recorder()
    wheel: DeadlineWheel[str] = DeadlineWheel(record, resolution=0.05)
    loop = asyncio.get_running_loop()
    scheduled_before = len(loop._scheduled)  # type: ignore[attr-defined]
    for n in range(500):
        wheel.add(f"connection-{n}", 5.0 + n / 1000)
    assert len(loop._scheduled) - scheduled_before == 1  # type: ignore[attr-defined]
    wheel.close()
    assert len(wheel) == 0
    await asyncio.sleep(0.05)
    assert record.due == []


async def test_items_that_come_and_go_leave_one_key_per_bucket() -> None:
    """Connections that authenticate at once (add, then discard) in the same
    bucket must not grow the wheel with each one."""
    wheel: DeadlineWheel[str] = DeadlineWheel(Recorder(), resolution=10.0)
    for n in range(1000):
        wheel.add(f"connection-{n}", 5.0)
        wheel.discard(f"connection-{n}")
    assert len(wheel) == 0
    assert len(wheel._keys) <= 2 and len(wheel._buckets) <= 2
    wheel.close()


async def test_a_closed_wheel_takes_no_more_items() -> None:
    """An upgrade that completes while the application closes must not arm
    the timer again after the wheel was closed."""
    record = Recorder()
    wheel: DeadlineWheel[str] = DeadlineWheel(record, resolution=0.05)
    wheel.close()
    wheel.add("late upgrade", 0.01)
    assert len(wheel) == 0 and wheel._timer is None
    await asyncio.sleep(0.1)
    assert record.due == []


async def test_emptied_buckets_are_freed_and_their_keys_do_not_pile_up() -> None:
    """Sessions refreshed out of an hour-long wheel leave no sets behind, and
    the heap of keys is rebuilt once most of its keys have no bucket."""
    wheel: DeadlineWheel[str] = DeadlineWheel(Recorder(), resolution=1.0)
    for n in range(5000):
        wheel.add(f"session-{n}", 60.0 + n)
        wheel.discard(f"session-{n}")
    assert len(wheel) == 0 and wheel._buckets == {}
    assert len(wheel._keys) <= 64 + 1
    wheel.add("kept", 30.0)
    assert wheel._timer_key is not None and wheel._keys[0] == wheel._timer_key
    wheel.close()
