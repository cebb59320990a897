"""Redis dies, or hangs, while clients are connected to two multi-process instances.

Each test owns its ``redis-server`` (a free port; the shared 6379 is left
alone). Expected either way: no worker crashes, ``/health`` says
``redis: down`` meanwhile, the bus reconnects and delivery resumes (what was
sent during the outage included), and every message acknowledged with
``message_sent`` is in the database.
"""

from __future__ import annotations

import asyncio

import psycopg2
import pytest

from harness.cluster import start_instances, stop_all, workers_of
from harness.ports import wait_until
from harness.redis_server import private_redis
from harness.services import fresh_postgres_database, migrated
from tests.fanout.support import authed, frames_of, metric_value, metrics_text, unique

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]
GRACE = 1.0


@pytest.fixture(params=["pattern", "routed"])
def outage(request, tmp_path):
    """Routed mode finds workers through the connection slots, which a Redis
    restarted empty has lost: the workers write them again on reconnecting."""
    with private_redis(str(tmp_path)) as redis_server, \
            fresh_postgres_database() as database_url:
        servers = start_instances({"DATABASE_URL": migrated(database_url),
                                   "REDIS_URL": redis_server.url,
                                   "TORNCHAT_BUS_MODE": request.param,
                                   "TORNCHAT_PRESENCE_GRACE": str(GRACE)})
        try:
            yield servers, redis_server, database_url
        finally:
            stop_all(servers)


def redis_state(server) -> str | None:
    # a worker that has not noticed a hung Redis yet answers only once its
    # probe publish times out (2 s); give it longer than that
    status, body = server.health(timeout=5)
    return body.get("dependencies", {}).get("redis") if status else None


async def every_worker_says(server, state: str, timeout: float) -> None:
    """Ten answers in a row (whichever of the instance's two workers wins each
    accept answers: one is missed with a chance of 1 in 500), in a thread: the
    test's clients must go on answering the servers' pings."""
    await asyncio.to_thread(
        wait_until, lambda: all(redis_state(server) == state for _ in range(10)), timeout,
        what=f"/health redis {state} on every worker")


def stored_ids(database_url: str, ids: list[str]) -> set[str]:
    connection = psycopg2.connect(database_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM message WHERE id = ANY(%s)", (ids,))
            return {row[0] for row in cursor.fetchall()}
    finally:
        connection.close()


async def _scenario(outage, break_redis, mend_redis) -> None:
    servers, redis_server, database_url = outage
    a, b = servers
    workers = {server.port: set(workers_of(server)) for server in servers}
    alice, bob = unique("alice"), unique("bob")
    alice_client, bob_client = await authed(a, alice), await authed(b, bob)
    acknowledged: list[str] = []

    async def send(content: str) -> dict:
        reply = await alice_client.request({"type": "send_message", "recipientIds": [bob],
                                            "content": content}, timeout=3)
        assert reply["type"] == "message_sent", reply
        acknowledged.append(reply["data"]["id"])
        return reply

    await send("before")
    await frames_of(bob_client, "new_message", 1)

    break_redis(redis_server)
    for server in servers:
        await every_worker_says(server, "down", 30)
        assert (await asyncio.to_thread(server.health, 5))[0] == 503
    # the store does not need Redis: sends are stored and acknowledged at once
    during = [await send(f"during {i}") for i in range(3)]

    mend_redis(redis_server)
    for server in servers:
        await every_worker_says(server, "ok", 20)
    after = await send("after")

    received = await frames_of(bob_client, "new_message", len(during) + 1, timeout=15)
    assert [frame["data"]["seq"] for frame in received] == [
        reply["data"]["seq"] for reply in (*during, after)]

    for server in servers:
        assert set(workers_of(server)) == workers[server.port], "a worker was replaced"
        assert "Redis bus reconnected and resubscribed" in server.logs()
        assert metric_value(metrics_text(server), "tornchat_bus_reconnects_total") >= 1
    assert stored_ids(database_url, acknowledged) == set(acknowledged)
    alice_client.close()
    bob_client.close()


async def test_redis_restart_reconnects_and_loses_no_acknowledged_message(outage):
    await _scenario(outage, break_redis=lambda redis: redis.kill(),
                    mend_redis=lambda redis: redis.start())


async def test_hung_redis_is_noticed_by_the_subscriber_pings(outage):
    """SIGSTOP: no FIN, no RST; only the listener's unanswered PINGs reveal it."""
    await _scenario(outage, break_redis=lambda redis: redis.pause(),
                    mend_redis=lambda redis: redis.resume())


async def test_a_user_connected_through_an_empty_restart_still_leaves_with_a_last_seen_time(
        outage):
    """The restart took bob's presence record with it; his worker writes it
    again on reconnecting, so when he leaves, his watcher on the other
    instance hears it after the grace, with ``lastSeenAt``, as usual. And
    the watcher's own worker, re-reading before bob's has written the record
    again, does not flap him offline meanwhile: the first change the watcher
    hears is his departure."""
    servers, redis_server, _ = outage
    a, b = servers
    alice, bob = unique("alice"), unique("bob")
    alice_client, bob_client = await authed(a, alice), await authed(b, bob)
    ack = await alice_client.request({"type": "send_message", "recipientIds": [bob],
                                      "content": "hi"}, timeout=3)
    assert ack["type"] == "message_sent", ack
    await alice_client.send({"type": "presence_subscribe", "userIds": [bob]})
    assert (await alice_client.expect("presence"))["data"]["status"] == "online"

    redis_server.kill()
    redis_server.start()
    restored = "presence and presence watches restored after a Redis outage"
    for server in servers:  # every worker: bob's may be either of his instance's two
        await asyncio.to_thread(
            wait_until, lambda server=server: server.logs().count(restored)
            >= len(workers_of(server)), 20, what="the restore after the restart")
    bob_client.close()
    frame = await alice_client.expect("presence", timeout=GRACE + 5)
    assert frame["data"]["userId"] == bob
    assert frame["data"]["status"] == "offline"
    assert frame["data"].get("lastSeenAt"), frame
    alice_client.close()
