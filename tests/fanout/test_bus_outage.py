"""What a worker keeps through a Redis outage, and what it writes again after.

Routed mode finds the workers that hold a user through the connection slots,
which a Redis restarted empty has lost: what was kept through the outage goes
to every worker known then (each drops what it has no receiver for), and the
bus tells the application, once it is subscribed again, to write its shared
state back (``Bus.on_resubscribed``), also after a start without Redis.

Each test owns a ``redis-server`` (started without persistence, so a restart
is empty) and runs :class:`RedisBus` objects on the test's IOLoop.
"""

from __future__ import annotations

import asyncio

import pytest

from harness.redis_server import private_redis
from tests.fanout.test_bus_peers import (
    delivery,
    drain,
    eventually,
    published_on_redis,
    started,
)
from tornchat.fanout.redis_bus import ROUTED_MODE, RedisBus, new_worker_id
from tornchat.metrics import Metrics

pytestmark = [pytest.mark.redis, pytest.mark.slow]


async def test_routed_kept_deliveries_reach_the_workers_known_before_the_outage(tmp_path):
    """No connection slot names b (as after a restart that emptied Redis), so
    slot routing would send b nothing; what a kept goes to b all the same."""
    with private_redis(str(tmp_path)) as server:
        (a, _), (b, received_by_b) = (await started(server.url, ROUTED_MODE),
                                       await started(server.url, ROUTED_MODE))
        try:
            await eventually(lambda: b.worker_id in a._peers._known, "a to know b")
            server.kill()
            await eventually(lambda: not a._up and not b._up, "both to see the outage")
            for n in (1, 2, 3):
                a.publish_nowait(delivery(n))
            server.start()
            await eventually(lambda: [d.seq for d in received_by_b] == [1, 2, 3],
                             "the kept deliveries, in order, at b", timeout=15)
            a.publish_nowait(delivery(4))  # live again: routed by the (empty) slots
            await eventually(lambda: not a._outbox, "a's queue drained")
            assert [d.seq for d in received_by_b] == [1, 2, 3]
        finally:
            await a.stop()
            await b.stop()


async def test_the_application_is_told_after_an_outage_not_at_the_first_subscription(
        tmp_path):
    with private_redis(str(tmp_path)) as server:
        bus, _ = await started(server.url)
        told: list[str] = []
        bus.on_resubscribed(lambda: told.append("back"))
        try:
            await eventually(lambda: bus._up, "subscribed")
            assert told == []
            server.kill()
            await eventually(lambda: not bus._up, "the outage seen")
            server.start()
            await eventually(lambda: told == ["back"], "told once it is back", timeout=10)
        finally:
            await bus.stop()


async def test_a_worker_that_started_without_redis_is_told_at_its_first_subscription(
        tmp_path):
    with private_redis(str(tmp_path)) as server:
        server.kill()
        bus, _ = await started(server.url)  # degraded: it never subscribed
        told: list[str] = []
        bus.on_resubscribed(lambda: told.append("back"))
        try:
            assert not bus._up
            server.start()
            await eventually(lambda: told == ["back"], "told once it is subscribed",
                             timeout=10)
        finally:
            await bus.stop()


async def test_a_subscription_lost_while_nothing_was_queued_holds_no_publish_back(tmp_path):
    """A blip of this worker's subscription (on a cluster: its channel's slot
    moved) while its queue was idle keeps nothing: the next delivery goes out
    at once, not after waiting for peers. Here the peer a still knows of has
    gone, so a wait would last its whole bound."""
    with private_redis(str(tmp_path)) as server:
        b, _ = await started(server.url)
        a = RedisBus(server.url, new_worker_id(), Metrics(), probe_interval=60)
        await a.start(lambda _delivery: None)  # its announcement finds b; no check after
        spy = published_on_redis(server.url)
        try:
            assert b.worker_id in a._peers._known and not a.alone
            a.publish_nowait(delivery(0))  # the publish task runs from here on
            assert len(await asyncio.to_thread(drain, spy, 0.5)) == 1
            await b.stop()
            a._on_state(False, "the listener lost its subscription")  # as the listener hands it
            a._on_state(True, "subscribed")
            a.publish_nowait(delivery(1))
            assert len(await asyncio.to_thread(drain, spy, 1.0)) == 1, "published at once"
        finally:
            spy.close()
            await a.stop()
