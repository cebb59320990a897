"""PROTOCOL §13 across two ``serve --processes 2`` instances sharing Redis:
presence changes reach watchers on every worker and instance, the grace
holds cluster-wide, and a SIGKILLed worker's users go offline when their
connection slots expire (2.5 heartbeats: 7.5 s here)."""

from __future__ import annotations

import asyncio
import time

import pytest

from harness.cluster import start_instances, stop_all, workers_of
from harness.http import ApiClient
from harness.server import TEST_SECRET
from harness.services import fresh_postgres_database, migrated
from tests.fanout.support import authed, kill_until_some_drop, redis_for, unique

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]
GRACE = 1.0
SLOT_TTL = 7.5  # FAST_ENV: 3-second heartbeats


@pytest.fixture(scope="module", params=["pattern", "routed", "redis-cluster"])
def cluster(request, tmp_path_factory):
    with redis_for(request.param, tmp_path_factory) as (redis_url, mode), \
            fresh_postgres_database() as database_url:
        servers = start_instances({"DATABASE_URL": migrated(database_url),
                                   "REDIS_URL": redis_url, "TORNCHAT_BUS_MODE": mode,
                                   "TORNCHAT_PRESENCE_GRACE": str(GRACE)})
        try:
            yield servers
        finally:
            stop_all(servers)


async def _share(server, user: str, others: list[str]):
    client = await authed(server, user)
    ack = await client.request({"type": "send_message", "recipientIds": others,
                                "content": "hello"})
    assert ack["type"] == "message_sent", ack
    return client


async def _subscribe(client, user_ids: list[str]) -> dict[str, str]:
    await client.send({"type": "presence_subscribe", "userIds": user_ids})
    return {frame["data"]["userId"]: frame["data"]["status"]
            for frame in [await client.expect("presence") for _ in user_ids]}


async def _next_status(client, timeout: float) -> tuple[str, str]:
    frame = await client.expect("presence", timeout=timeout)
    return frame["data"]["userId"], frame["data"]["status"]


async def test_changes_reach_watchers_on_every_instance_and_worker(cluster):
    a, b = cluster
    bob = unique("bob")
    # four watchers, two per instance: with 2 workers each, several workers watch
    watchers = [await _share(server, unique("w"), [bob]) for server in (a, b, a, b)]
    for watcher in watchers:
        assert await _subscribe(watcher, [bob]) == {bob: "offline"}

    bob_client = await authed(b, bob)
    for watcher in watchers:
        assert await _next_status(watcher, 5) == (bob, "online")
    bob_client.close()
    for watcher in watchers:
        assert await _next_status(watcher, GRACE + 5) == (bob, "offline")
    for watcher in watchers:
        watcher.close()


async def test_a_reconnect_on_the_other_instance_inside_the_grace_does_not_flap(cluster):
    a, b = cluster
    bob = unique("bob")
    watcher = await _share(a, unique("w"), [bob])
    bob_client = await authed(a, bob)
    assert await _subscribe(watcher, [bob]) == {bob: "online"}
    bob_client.close()
    await asyncio.sleep(GRACE / 10)  # the reconnect itself must fit in the grace too
    bob_client = await authed(b, bob)
    await watcher.nothing_within(GRACE * 2.5)
    bob_client.close()
    assert await _next_status(watcher, GRACE + 5) == (bob, "offline")
    watcher.close()


async def test_strangers_are_unknown_cluster_wide_and_the_http_lookup_agrees(cluster):
    a, b = cluster
    alice, bob, stranger = unique("alice"), unique("bob"), unique("stranger")
    watcher = await _share(a, alice, [bob])
    bob_client = await authed(b, bob)
    stranger_client = await authed(b, stranger)
    assert await _subscribe(watcher, [bob, stranger]) == {bob: "online", stranger: "unknown"}
    stranger_client.close()
    await watcher.nothing_within(GRACE + 1)

    answer = await ApiClient(b.http_url, TEST_SECRET, alice).get(
        f"/api/v1/presence?userIds={bob},{stranger}")
    assert answer.status == 200, answer.body
    assert [(entry["userId"], entry["status"]) for entry in answer.body["presence"]] == [
        (bob, "online"), (stranger, "unknown")]
    bob_client.close()
    watcher.close()


async def test_users_of_a_sigkilled_worker_go_offline_when_their_slots_expire(cluster):
    a, b = cluster
    watcher_id = unique("w")
    victims = [unique(f"v{i}") for i in range(6)]
    watcher = await _share(a, watcher_id, victims)
    clients = [await authed(b, victim) for victim in victims]
    assert await _subscribe(watcher, victims) == dict.fromkeys(victims, "online")

    indices, killed_at = await kill_until_some_drop(workers_of(b), clients)
    gone = [victims[index] for index in indices]
    assert gone, "no connection dropped when the workers were killed"
    offline: list[str] = []
    while len(offline) < len(gone):
        user, status = await _next_status(watcher, SLOT_TTL + 5)
        assert status == "offline" and user in gone, (user, status)
        offline.append(user)
    took = time.monotonic() - killed_at
    assert took < SLOT_TTL + 5, f"offline {took:.1f}s after the kill"
    await watcher.nothing_within(0.5)  # the others (on the surviving worker) stay online
    for client in clients:
        client.close()
    watcher.close()
