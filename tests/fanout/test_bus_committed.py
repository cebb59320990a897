"""Committed messages leave for the other workers from the writer's thread
(``Bus.publish_committed``), without waiting for this worker's IOLoop; when
Redis refuses them they go to the publish queue, which delivers them once
Redis is back, and only after it has drained does the writer publish again.

Each test owns a ``redis-server`` and runs two :class:`RedisBus` on the
test's IOLoop (two workers of one instance).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

from harness.redis_server import private_redis
from tests.fanout.test_bus_peers import delivery, drain, eventually, published_on_redis, started
from tornchat.backoff import CAP, Backoff
from tornchat.fanout.bus import MESSAGE, Delivery

pytestmark = [pytest.mark.redis]



async def test_a_committed_batch_reaches_redis_while_the_ioloop_is_busy(tmp_path):
    with private_redis(str(tmp_path)) as server:
        (a, _), (b, received_by_b) = await started(server.url), await started(server.url)
        try:
            await eventually(lambda: not a.alone, "the workers to find each other")
            spy = published_on_redis(server.url)
            seen: list[bytes] = []

            def writer_thread() -> None:
                a.publish_committed([delivery(n) for n in (1, 2, 3)])
                seen.extend(drain(spy, 0.3))

            writer = threading.Thread(target=writer_thread)
            writer.start()
            time.sleep(0.5)  # the IOLoop is busy: nothing on it runs meanwhile
            writer.join()
            assert len(seen) == 3, "published only once the loop was free"
            await eventually(lambda: len(received_by_b) == 3, "the other worker's deliveries")
            assert [d.seq for d in received_by_b] == [1, 2, 3]
            assert not a._outbox
            spy.close()
        finally:
            await a.stop()
            await b.stop()


@pytest.mark.slow
async def test_a_refused_batch_goes_through_the_queue_and_the_writer_waits_for_it(tmp_path):
    with private_redis(str(tmp_path)) as server:
        (a, _), (b, received_by_b) = await started(server.url), await started(server.url)
        try:
            await eventually(lambda: not a.alone, "the workers to find each other")
            server.kill()
            await asyncio.to_thread(a.publish_committed, [delivery(n) for n in (1, 2)])
            assert not a._direct_open
            await eventually(lambda: len(a._outbox) == 2, "the batch in the publish queue")
            await asyncio.to_thread(a.publish_committed, [delivery(3)])  # queued behind them
            await eventually(lambda: len(a._outbox) == 3, "the next batch queued behind")
            server.start()
            await eventually(lambda: [d.seq for d in received_by_b] == [1, 2, 3],
                             "the queued deliveries, in order", timeout=20)
            await eventually(lambda: a._direct_open, "the writer's road to reopen once the "
                             "queue drained")
            # a check made while b was resubscribing may have found a alone, and
            # a worker alone publishes nothing; it learns of b at once or next check
            await eventually(lambda: not a.alone, "the worker to know its peer again")
            await asyncio.to_thread(a.publish_committed, [delivery(4)])
            await eventually(lambda: len(received_by_b) == 4, "the writer's road again")
            assert not a._outbox
        finally:
            await a.stop()
            await b.stop()


async def test_writer_threads_publishing_at_once_each_use_their_own_connection(tmp_path):
    """TORNCHAT_WRITER_THREADS > 1: two threads publish large batches side by
    side; every delivery arrives and none fell back to the queue."""
    with private_redis(str(tmp_path)) as server:
        (a, _), (b, received_by_b) = await started(server.url), await started(server.url)
        try:
            await eventually(lambda: not a.alone, "the workers to find each other")
            big = "x" * 50_000

            def writer_thread(first: int) -> None:
                for n in range(first, first + 40):
                    a.publish_committed([Delivery(kind=MESSAGE, conversation_id=f"c{first}",
                                                  user_ids=("a", "b"), frame=big, seq=n)])

            writers = [threading.Thread(target=writer_thread, args=(first,))
                       for first in (1, 1001)]
            for writer in writers:
                writer.start()
            for writer in writers:
                await asyncio.to_thread(writer.join)
            await eventually(lambda: len(received_by_b) == 80, "every delivery", timeout=10)
            assert a._direct_open and len(a._directs) == 2
            for first in (1, 1001):
                assert [d.seq for d in received_by_b
                        if d.conversation_id == f"c{first}"] == list(range(first, first + 40))
        finally:
            await a.stop()
            await b.stop()


@pytest.mark.slow
async def test_kept_deliveries_wait_for_a_peer_that_resubscribes_late(tmp_path):
    """After an outage the kept queue goes out once every worker known before
    it listens again, not after a fixed pause: here the peer is back later
    than one backoff cap after this worker. Pub/sub keeps nothing, so the
    delivery arriving proves it was published after that."""
    with private_redis(str(tmp_path)) as server:
        (a, _), (b, received_by_b) = await started(server.url), await started(server.url)
        try:
            await eventually(lambda: b.worker_id in a._peers._known, "a to know b")
            assert a._listener is not None and b._listener is not None
            a._listener._backoff = Backoff(base=0.05, cap=0.05, jitter=False)
            b._listener._backoff = Backoff(base=0.05, cap=0.05, jitter=False)
            back_at = [float("inf")]  # b's subscriber fails until then (its thread's clock)
            resubscribe = b._listener._session

            def late_session() -> None:
                if time.monotonic() < back_at[0]:
                    raise redis.ConnectionError("held back by the test")
                resubscribe()

            b._listener._session = late_session  # type: ignore[method-assign]
            server.kill()
            await eventually(lambda: not a._up and not b._up, "both to see the outage")
            a.publish_nowait(delivery(1))
            server.start()
            await eventually(lambda: a._up, "this worker back")
            back_at[0] = time.monotonic() + CAP + 0.5  # past a fixed pause, within the bound
            await eventually(lambda: [d.seq for d in received_by_b] == [1],
                             "the kept delivery at the late peer", timeout=10)
            assert time.monotonic() > back_at[0]
        finally:
            await a.stop()
            await b.stop()
