"""The bus's publish loop outlives whatever a publish raises: redis-py's
cluster client raises RedisClusterException (not a RedisError) when no node
answers, and a bug could raise anything. The batch is kept and published
once the publish works again, in order."""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisClusterException

from harness.ports import free_port
from tornchat.fanout.bus import MESSAGE, Delivery
from tornchat.fanout.redis_bus import RedisBus
from tornchat.metrics import Metrics


async def test_the_publish_loop_keeps_its_batch_through_any_failure(monkeypatch):
    bus = RedisBus(f"redis+cluster://127.0.0.1:{free_port()}/", "w-self", Metrics(),
                   mode="routed")
    bus._up = True  # as if subscribed: what is tested is the publisher alone
    bus._became_up.set()
    failures = [RedisClusterException("Redis Cluster cannot be connected"), ValueError("bug")]
    published: list[int] = []

    async def flaky_send(batch, sent_at):
        if failures:
            raise failures.pop(0)
        published.extend(delivery.seq for delivery in batch)

    monkeypatch.setattr(bus, "_send_sharded", flaky_send)
    monkeypatch.setattr("tornchat.fanout.redis_bus.Backoff.next", lambda self: 0.01)
    for seq in (1, 2, 3):
        bus.publish_nowait(Delivery(MESSAGE, "c1", ("bob",), "{}", seq=seq,
                                    to_workers=("w-other",)))
    for _ in range(200):
        if published == [1, 2, 3]:
            break
        await asyncio.sleep(0.01)
    assert published == [1, 2, 3]
    assert not bus._publisher.done()
    bus._closing = True
    bus._wakeup.set()
    await asyncio.wait_for(bus._publisher, 2)
