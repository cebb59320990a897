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

import pytest

from harness.redis_server import private_redis
from tests.fanout.test_bus_peers import delivery, eventually, started
from tornchat.fanout.redis_bus import ROUTED_MODE

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
