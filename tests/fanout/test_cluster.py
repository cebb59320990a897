"""Two ``tornchat serve --processes 2`` instances sharing Redis and PostgreSQL behave as one.

Instance A and B are real subprocesses on different ports; every client is
pinned to an instance by its port, and to a worker by whichever worker wins
the accept, so cross-worker and cross-instance paths are both exercised.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from harness.cluster import all_workers_healthy, start_instances, stop_all, workers_of
from harness.http import ApiClient
from harness.ports import wait_until
from harness.server import TEST_SECRET
from harness.services import fresh_postgres_database, migrated
from tests.fanout.support import (
    authed,
    connect,
    connect_pipelined,
    frames_of,
    kill_until_some_drop,
    metric_value,
    metrics_text,
    redis_for,
    unique,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]
API_KEY = "cluster-server-api-key-" + "x" * 16


@pytest.fixture(scope="module", params=["pattern", "routed", "redis-cluster"])
def cluster(request, tmp_path_factory):
    """Instances A and B, in each bus mode (TORNCHAT_BUS_MODE), and routed on a Redis Cluster."""
    with redis_for(request.param, tmp_path_factory) as (redis_url, mode), \
            fresh_postgres_database() as database_url:
        servers = start_instances({"DATABASE_URL": migrated(database_url),
                                   "REDIS_URL": redis_url, "TORNCHAT_BUS_MODE": mode,
                                   "TORNCHAT_API_KEY": API_KEY})
        try:
            yield servers
        finally:
            stop_all(servers)


async def test_one_to_one_reaches_the_recipient_and_the_senders_other_device(cluster):
    a, b = cluster
    alice, bob = unique("alice"), unique("bob")
    alice_phone = await authed(a, alice)
    alice_laptop = await authed(b, alice)
    bob_client = await authed(b, bob)
    sent = await alice_phone.request({"type": "send_message", "recipientIds": [bob],
                                      "content": "hi across instances"})
    assert sent["type"] == "message_sent"
    for client in (bob_client, alice_laptop):
        frame = await client.expect("new_message")
        assert frame["data"] == sent["data"]
    await alice_phone.nothing_within(0.3)

    reply = await bob_client.request({"type": "send_message",
                                      "conversationId": sent["data"]["conversationId"],
                                      "content": "hi back"})
    assert reply["data"]["seq"] == 2
    for client in (alice_phone, alice_laptop):
        assert (await client.expect("new_message"))["data"] == reply["data"]
    for client in (alice_phone, alice_laptop, bob_client):
        client.close()


async def test_group_message_reaches_every_member_on_every_instance(cluster):
    a, b = cluster
    users = [unique(name) for name in ("ann", "ben", "cid", "dee")]
    clients = [await authed(server, user) for server, user in zip((a, b, a, b), users,
                                                                     strict=True)]
    sent = await clients[0].request({"type": "send_message", "recipientIds": users[1:],
                                     "content": "hello group"})
    for client in clients[1:]:
        assert (await client.expect("new_message"))["data"] == sent["data"]
    for client in clients:
        client.close()


async def test_typing_crosses_instances_and_skips_the_typist(cluster):
    a, b = cluster
    alice, bob = unique("alice"), unique("bob")
    alice_client, bob_client = await authed(a, alice), await authed(b, bob)
    sent = await alice_client.request({"type": "send_message", "recipientIds": [bob],
                                       "content": "typing test"})
    await bob_client.expect("new_message")
    conversation_id = sent["data"]["conversationId"]
    await bob_client.send({"type": "typing", "conversationId": conversation_id})
    frame = await alice_client.expect("typing")
    assert frame["data"] == {"conversationId": conversation_id, "userId": bob}
    await bob_client.nothing_within(0.3)
    alice_client.close()
    bob_client.close()


async def test_sixth_connection_is_refused_cluster_wide_and_a_close_frees_a_slot(cluster):
    a, b = cluster
    user = unique("many")
    held = [await authed(server, user) for server in (a, b, a, b, a)]
    for server in (a, b):
        client, reply = await connect(server, user)
        assert reply == {"type": "auth_error", "error": "Too many connections"}
        assert await client.wait_closed() == 4029

    held.pop().close()

    async def retry_until_accepted(server):
        for _ in range(40):
            client, reply = await connect(server, user)
            if reply["type"] == "auth_success":
                return client
            await client.wait_closed()
            await asyncio.sleep(0.05)
        raise AssertionError("the closed connection's slot was never freed")

    held.append(await retry_until_accepted(b))
    client, reply = await connect(a, user)
    assert reply["type"] == "auth_error"
    assert await client.wait_closed() == 4029
    for client in held:
        client.close()


async def test_bursts_from_two_instances_arrive_in_seq_order_everywhere(cluster):
    a, b = cluster
    alice, bob, carol, dave = (unique(n) for n in ("alice", "bob", "carol", "dave"))
    senders = {alice: await authed(a, alice), bob: await authed(b, bob)}
    watchers = [await authed(server, name) for server, name in
                ((a, carol), (b, dave), (b, carol), (a, dave))]
    first = await senders[alice].request({"type": "send_message",
                                          "recipientIds": [bob, carol, dave],
                                          "content": "start"})
    conversation_id = first["data"]["conversationId"]
    for client in (senders[bob], *watchers):
        await frames_of(client, "new_message", 1)

    per_sender = 40
    total = 2 * per_sender

    async def read(client, counts: dict[str, int]) -> dict[str, list[int]]:
        """One reader per socket: the seqs of each frame type, in arrival order."""
        seen: dict[str, list[int]] = {kind: [] for kind in counts}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while any(len(seen[kind]) < n for kind, n in counts.items()):
            frame = await client.recv(max(0.0, deadline - loop.time()))
            if frame["type"] in seen:
                seen[frame["type"]].append(frame["data"]["seq"])
        return seen

    async def burst(user: str) -> None:
        for i in range(per_sender):
            await senders[user].send({"type": "send_message", "conversationId": conversation_id,
                                      "content": f"{user} {i}"})

    both = {"message_sent": per_sender, "new_message": per_sender}
    _, _, *watched, alice_saw, bob_saw = await asyncio.gather(
        burst(alice), burst(bob),
        *(read(client, {"new_message": total}) for client in watchers),
        read(senders[alice], both), read(senders[bob], both))
    everything = list(range(2, 2 + total))
    assert sorted(alice_saw["message_sent"] + bob_saw["message_sent"]) == everything
    for seen in watched:
        assert seen["new_message"] == everything
    assert alice_saw["new_message"] == sorted(bob_saw["message_sent"])
    assert bob_saw["new_message"] == sorted(alice_saw["message_sent"])
    for client in (*senders.values(), *watchers):
        client.close()


async def test_metrics_are_the_sum_over_workers(cluster):
    a, b = cluster
    alice, bob = unique("alice"), unique("bob")
    alice_client, bob_client = await authed(a, alice), await authed(b, bob)
    before = metric_value(metrics_text(a), "tornchat_messages_sent_total")
    for i in range(6):
        await alice_client.request({"type": "send_message", "recipientIds": [bob],
                                    "content": f"count {i}"})
    await frames_of(bob_client, "new_message", 6)
    # whichever worker answers, the scrape aggregates every worker's files
    scrapes = [metrics_text(a) for _ in range(8)]
    assert {metric_value(text, "tornchat_messages_sent_total") for text in scrapes} == {
        before + 6}
    text = scrapes[0]
    assert metric_value(text, "tornchat_connections") >= 1  # alice; bob is on b
    assert metric_value(text, "tornchat_messages_delivered_total") >= 6
    assert metric_value(text, 'tornchat_redis_pubsub_messages_total{direction="out"}') >= 6
    assert metric_value(text, "tornchat_delivery_latency_seconds_count") >= 6
    assert "tornchat_bus_reconnects_total" in text
    alice_client.close()
    bob_client.close()


async def _send_acked(client, conversation_id: str, content: str) -> dict:
    await client.send({"type": "send_message", "conversationId": conversation_id,
                       "content": content})
    while True:
        reply = await client.recv(10)
        if reply["type"] == "message_sent":
            return reply["data"]


async def test_sync_is_exactly_once_in_order_while_both_instances_keep_sending(cluster):
    """Contract section 11 across workers and instances: a client that
    pipelines sync behind auth, on either instance, gets every message above
    its known seq once, in seq order, replayed or live, while senders on both
    instances go on."""
    a, b = cluster
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    senders = [await authed(a, alice), await authed(b, carol)]
    first = await senders[0].request({"type": "send_message", "recipientIds": [bob, carol],
                                      "content": "0"})
    conversation_id = first["data"]["conversationId"]
    for index in range(40):
        await _send_acked(senders[index % 2], conversation_id, f"before {index}")
    streaming = True

    async def stream(client) -> None:
        while streaming:
            await _send_acked(client, conversation_id, "live")

    live = [asyncio.ensure_future(stream(client)) for client in senders]
    try:
        for attempt, server in enumerate((a, b, a, b)):
            known = 5 + attempt * 7
            client = await connect_pipelined(server, bob,
                                             {"type": "sync",
                                              "conversations": {conversation_id: known}})
            seqs: list[int] = []
            while len(seqs) < 60:
                frame = await client.recv(10)
                if frame["type"] == "new_message":
                    seqs.append(frame["data"]["seq"])
            assert seqs == list(range(known + 1, known + 61)), (attempt, seqs)
            client.close()
    finally:
        streaming = False
        await asyncio.gather(*live)
    for client in senders:
        client.close()


async def test_a_read_reaches_every_participant_on_every_instance(cluster):
    a, b = cluster
    alice, bob = unique("alice"), unique("bob")
    alice_client = await authed(b, alice)
    bob_phone, bob_laptop = await authed(a, bob), await authed(b, bob)
    sent = await alice_client.request({"type": "send_message", "recipientIds": [bob],
                                       "content": "read me"})
    conversation_id = sent["data"]["conversationId"]
    for client in (bob_phone, bob_laptop):
        await client.expect("new_message")
    answer = await bob_phone.request({"type": "mark_read", "conversationId": conversation_id,
                                      "seq": 1, "requestId": "r"})
    assert (answer["type"], answer["requestId"], answer["data"]["unreadCount"]) == (
        "read", "r", 0)
    laptop = await bob_laptop.expect("read")
    assert "requestId" not in laptop and laptop["data"]["unreadCount"] == 0
    seen = await alice_client.expect("read")
    assert (seen["data"]["userId"], seen["data"]["lastReadSeq"]) == (bob, 1)
    assert "unreadCount" not in seen["data"]
    for client in (alice_client, bob_phone, bob_laptop):
        client.close()


async def test_the_server_api_delivers_and_disconnects_on_every_instance(cluster):
    """Contract section 15: a post reaches every participant connection on
    both instances (the sender's too); a disconnect closes the user's
    connections on both, with 4003, and counts them cluster-wide."""
    a, b = cluster
    alice, bob = unique("alice"), unique("bob")
    connections = [await authed(a, alice), await authed(b, alice), await authed(b, bob)]
    backend = ApiClient(a.http_url, TEST_SECRET)
    posted = await backend.post("/api/v1/server/messages",
                                {"senderId": alice, "recipientIds": [bob], "content": "bot"},
                                headers={"X-API-Key": API_KEY})
    assert posted.status == 201, posted.body
    for client in connections:
        assert (await client.expect("new_message"))["data"] == posted.body["message"]
    bobs = [connections[2], await authed(a, bob)]
    answer = await ApiClient(b.http_url, TEST_SECRET).post(
        f"/api/v1/server/users/{bob}/disconnect", None, headers={"X-API-Key": API_KEY})
    assert answer.body == {"closed": 2}
    for client in bobs:
        assert await client.recv() == {"type": "auth_error", "error": "Disconnected by server"}
        assert await client.wait_closed() == 4003
    for client in connections[:2]:
        assert await client.request({"type": "ping"}) == {"type": "pong"}
        client.close()


async def test_slot_of_a_sigkilled_worker_expires_and_the_worker_is_replaced(cluster):
    a, b = cluster
    user = unique("victim")
    clients = [await authed(b, user) for _ in range(5)]
    workers = workers_of(b)
    assert len(workers) == 2

    indices, _ = await kill_until_some_drop(workers, clients)
    dropped = [clients[index] for index in indices]
    survivors = [c for c in clients if c not in dropped]
    killed_at = time.monotonic()

    # the dead worker never released its slots: they expire (2.5 heartbeats)
    reopened = []
    for _ in range(len(dropped)):
        while True:
            assert time.monotonic() - killed_at < 20, "slots of the killed worker leaked"
            client, reply = await connect(a, user)
            if reply["type"] == "auth_success":
                reopened.append(client)
                break
            await client.wait_closed()
            await asyncio.sleep(0.2)
    client, reply = await connect(a, user)
    assert reply["type"] == "auth_error" and await client.wait_closed() == 4029

    wait_until(lambda: all_workers_healthy(b, 2), 20, what="replacement worker")
    assert set(workers_of(b)) != set(workers)
    assert "worker died; starting a replacement" in b.logs()
    for client in survivors + reopened:
        client.close()
