"""A worker alone on the Redis bus publishes nothing; a second worker is heard
before it takes clients, and the first goes quiet again once it is gone.

Each test owns a ``redis-server`` (the shared one may carry other workers'
probe channels) and runs :class:`RedisBus` objects on the test's IOLoop.
"""

from __future__ import annotations

import time

import pytest
import redis

from harness.ports import eventually, free_port
from harness.redis_server import RedisServer, private_redis
from tornchat.fanout.bus import MESSAGE, Delivery
from tornchat.fanout.redis_bus import PATTERN_MODE, RedisBus, new_worker_id
from tornchat.fanout.redis_wire import PROBE_CHANNEL_PREFIX
from tornchat.metrics import Metrics

pytestmark = [pytest.mark.redis]

PROBE_INTERVAL = 0.2


def delivery(n: int) -> Delivery:
    return Delivery(kind=MESSAGE, conversation_id="c_peers", user_ids=("a", "b"),
                    frame=f'{{"n":{n}}}', seq=n)


async def started(url: str, mode: str = PATTERN_MODE) -> tuple[RedisBus, list[Delivery]]:
    received: list[Delivery] = []
    bus = RedisBus(url, new_worker_id(), Metrics(), mode=mode, probe_interval=PROBE_INTERVAL)
    await bus.start(received.append)
    return bus, received


def published_on_redis(url: str) -> redis.client.PubSub:
    """A plain subscriber that sees whatever any worker publishes for chats."""
    pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("chat:*")
    return pubsub


def drain(pubsub: redis.client.PubSub, seconds: float) -> list[bytes]:
    seen: list[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.05)
        if message is not None:
            seen.append(message["data"])
    return seen


async def test_a_worker_alone_delivers_locally_and_publishes_nothing(tmp_path):
    with private_redis(str(tmp_path)) as server:
        bus, received = await started(server.url)
        try:
            await eventually(lambda: bus.alone, "the lone worker to notice it is alone")
            spy = published_on_redis(server.url)
            await bus.publish(delivery(1))
            await eventually(lambda: len(received) == 1, "the local delivery")
            assert drain(spy, 0.3) == []
            assert await bus.health() == "ok"  # the bus itself is still proven end to end
            spy.close()
        finally:
            await bus.stop()


async def test_a_new_worker_is_heard_before_it_takes_clients_and_missed_when_gone(tmp_path):
    with private_redis(str(tmp_path)) as server:
        first, first_received = await started(server.url)
        try:
            await eventually(lambda: first.alone, "the first worker to be alone")
            second, second_received = await started(server.url)
            # start() returned: the second worker would now take clients, so
            # the first must already be publishing for it
            assert not first.alone
            await first.publish(delivery(1))
            await eventually(lambda: len(second_received) == 1, "the delivery on the peer")
            assert second_received[0].frame == '{"n":1}'
            assert len(first_received) == 1  # local, exactly once (its echo is ignored)
            await second.stop()
            await eventually(lambda: first.alone, "the first worker to be alone again")
        finally:
            await first.stop()


async def test_a_check_that_overlaps_a_hello_does_not_end_publishing(tmp_path):
    """The peer list was read before the newcomer subscribed, but its hello
    arrived before the answer: the stale "alone" is discarded."""
    with private_redis(str(tmp_path)) as server:
        first, _ = await started(server.url)
        try:
            await eventually(lambda: first.alone, "the first worker to be alone")
            original = first._probe_redis.pubsub_channels
            second: list[RedisBus] = []

            async def peers_then_newcomer(pattern: str) -> list[bytes]:
                channels = await original(pattern)  # read while still alone
                bus, _ = await started(server.url)  # hello arrives meanwhile
                second.append(bus)
                return channels

            first._probe_redis.pubsub_channels = peers_then_newcomer  # type: ignore[method-assign]
            await first.check_peers()
            first._probe_redis.pubsub_channels = original  # type: ignore[method-assign]
            assert not first.alone
            await second[0].stop()
        finally:
            await first.stop()


async def test_a_worker_that_never_acknowledges_delays_a_start_only_briefly(tmp_path):
    """Something subscribed to a probe channel but deaf to hellos (a stuck or
    foreign worker): the newcomer waits a bounded time, then publishes anyway."""
    with private_redis(str(tmp_path)) as server:
        stranger = redis.Redis.from_url(server.url).pubsub()
        stranger.subscribe(PROBE_CHANNEL_PREFIX + "stranger")
        stranger.get_message(timeout=1.0)  # the subscribe confirmation
        began = time.monotonic()
        bus, _ = await started(server.url)
        try:
            assert time.monotonic() - began < 6.0
            assert not bus.alone
        finally:
            await bus.stop()
            stranger.close()


async def test_a_worker_that_started_before_redis_still_checks_for_peers(tmp_path):
    server = RedisServer(free_port(), str(tmp_path))  # not running yet
    bus, _ = await started(server.url)  # gives up waiting and starts degraded
    try:
        server.start()
        await eventually(lambda: bus.alone, "the late subscriber to find itself alone", 10.0)
        peer = redis.Redis.from_url(server.url).pubsub()
        peer.subscribe(PROBE_CHANNEL_PREFIX + "late-peer")  # no hello: only a check finds it
        peer.get_message(timeout=1.0)
        await eventually(lambda: not bus.alone, "the periodic check to find the peer")
        peer.close()
    finally:
        await bus.stop()
        server.kill()
