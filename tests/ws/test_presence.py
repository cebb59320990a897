"""PROTOCOL §13 on one process (no Redis): presence_subscribe, the grace,
strangers, the caps, unsubscribe and GET /api/v1/presence.

The cluster-wide behaviour (two instances, a SIGKILLed worker) is
tests/fanout/test_presence_cluster.py.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from harness.http import ApiClient
from harness.wsclient import WsClient, authed

GRACE = 0.5


@pytest.fixture
def server(io_loop, start_server):
    return io_loop.run_sync(lambda: start_server(presence_grace=GRACE))


async def _share(server, user: str, others: list[str]) -> WsClient:
    """``user`` online, in one conversation with ``others``."""
    client = await authed(server.url, server.secret, user)
    ack = await client.request({"type": "send_message", "recipientIds": others,
                                "content": "hello"})
    assert ack["type"] == "message_sent", ack
    return client


def _presence(frame: dict) -> tuple[str, str]:
    assert frame["type"] == "presence", frame
    return frame["data"]["userId"], frame["data"]["status"]


async def test_a_subscription_answers_at_once_then_follows_every_change(server):
    alice = await _share(server, "alice", ["bob"])
    answer = await alice.request({"type": "presence_subscribe", "userIds": ["bob"],
                                  "requestId": "p1"})
    assert answer == {"type": "presence", "requestId": "p1", "data": {
        "userId": "bob", "status": "offline", "lastSeenAt": None}}

    bob = await authed(server.url, server.secret, "bob")
    online = await alice.expect("presence")
    assert online == {"type": "presence", "data": {"userId": "bob", "status": "online",
                                                   "lastSeenAt": None}}
    left = time.time()
    bob.close()
    offline = await alice.expect("presence", timeout=GRACE + 3)
    assert _presence(offline) == ("bob", "offline")
    assert offline["data"]["lastSeenAt"] is not None
    seen = offline["data"]["lastSeenAt"]
    assert seen.endswith("Z") and abs(_epoch(seen) - left) < 1.0

    # a later subscriber is told when bob was last seen
    carol = await _share(server, "carol", ["bob"])
    later = await carol.request({"type": "presence_subscribe", "userIds": ["bob"]})
    assert later["data"] == offline["data"]


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).timestamp()


async def test_a_reconnect_inside_the_grace_does_not_flap(server):
    alice = await _share(server, "alice", ["bob"])
    bob = await authed(server.url, server.secret, "bob")
    assert _presence(await alice.request({"type": "presence_subscribe",
                                          "userIds": ["bob"]})) == ("bob", "online")
    bob.close()
    await asyncio.sleep(GRACE / 10)  # the reconnect itself must fit in the grace too
    bob = await authed(server.url, server.secret, "bob")
    await alice.nothing_within(GRACE * 3)
    bob.close()
    assert _presence(await alice.expect("presence", timeout=GRACE + 3)) == ("bob", "offline")


async def test_a_second_connection_keeps_the_user_online_when_one_ends(server):
    alice = await _share(server, "alice", ["bob"])
    phone = await authed(server.url, server.secret, "bob")
    laptop = await authed(server.url, server.secret, "bob")
    assert _presence(await alice.request({"type": "presence_subscribe",
                                          "userIds": ["bob"]})) == ("bob", "online")
    phone.close()
    await alice.nothing_within(GRACE * 3)
    laptop.close()
    assert _presence(await alice.expect("presence", timeout=GRACE + 3)) == ("bob", "offline")


async def test_strangers_are_unknown_and_never_updated(server):
    alice = await _share(server, "alice", ["bob"])
    await alice.send({"type": "presence_subscribe", "userIds": ["stranger", "bob"]})
    answers = [await alice.recv() for _ in range(2)]
    assert [_presence(frame) for frame in answers] == [("stranger", "unknown"),
                                                        ("bob", "offline")]
    assert answers[0]["data"]["lastSeenAt"] is None
    stranger = await authed(server.url, server.secret, "stranger")
    await alice.nothing_within(0.3)
    stranger.close()
    await alice.nothing_within(GRACE * 2)


async def test_repeated_ids_are_answered_once_in_the_order_asked(server):
    alice = await _share(server, "alice", ["bob", "carol"])
    await alice.send({"type": "presence_subscribe", "userIds": ["carol", "bob", "carol"]})
    assert [_presence(await alice.recv())[0] for _ in range(2)] == ["carol", "bob"]
    await alice.nothing_within(0.2)


async def test_unsubscribe_stops_the_updates(server):
    alice = await _share(server, "alice", ["bob"])
    await alice.request({"type": "presence_subscribe", "userIds": ["bob"]})
    await alice.send({"type": "presence_unsubscribe", "userIds": ["bob"]})
    assert await alice.request({"type": "ping"}) == {"type": "pong"}
    bob = await authed(server.url, server.secret, "bob")
    await alice.nothing_within(0.3)
    bob.close()


@pytest.mark.parametrize("user_ids", [[], "bob", [""], [7], ["x" * 129],
                                      [f"u{i}" for i in range(101)]])
async def test_a_malformed_subscription_is_refused(server, user_ids):
    alice = await authed(server.url, server.secret, "alice")
    for kind in ("presence_subscribe", "presence_unsubscribe"):
        reply = await alice.request({"type": kind, "userIds": user_ids, "requestId": "r"})
        assert (reply["type"], reply["code"], reply["requestId"]) == (
            "error", "invalid_message", "r")


async def test_a_connection_watches_at_most_500_users(server):
    members = [f"member-{i}" for i in range(501)]
    alice = await authed(server.url, server.secret, "alice")
    for start in range(0, 501, 100):  # groups of up to 100 recipients
        ack = await alice.request({"type": "send_message", "content": "hi",
                                   "recipientIds": members[start:start + 100]})
        assert ack["type"] == "message_sent", ack
    for start in range(0, 500, 100):
        await alice.send({"type": "presence_subscribe", "userIds": members[start:start + 100]})
        statuses = {_presence(await alice.recv()) for _ in range(100)}
        assert statuses == {(member, "offline") for member in members[start:start + 100]}
    # watching one already watched is no new one; the 501st is refused, nothing changes
    assert _presence(await alice.request({"type": "presence_subscribe",
                                          "userIds": ["member-0"]})) == ("member-0", "offline")
    refused = await alice.request({"type": "presence_subscribe",
                                   "userIds": ["member-0", "member-500"]})
    assert (refused["type"], refused["code"]) == ("error", "invalid_message")
    assert "at most 500" in refused["error"]
    member = await authed(server.url, server.secret, "member-500")
    await alice.nothing_within(0.3)
    member.close()
    # after unsubscribing one there is room for it (still online: in its grace)
    await alice.send({"type": "presence_unsubscribe", "userIds": ["member-1"]})
    assert _presence(await alice.request({"type": "presence_subscribe",
                                          "userIds": ["member-500"]})) == ("member-500",
                                                                           "online")


async def test_a_closed_connection_watches_no_one(server):
    alice = await _share(server, "alice", ["bob", "carol"])
    await alice.send({"type": "presence_subscribe", "userIds": ["bob", "carol"]})
    [await alice.recv() for _ in range(2)]
    watchers = server.app.presence.watchers
    assert len(watchers) == 2
    alice.close()
    deadline = time.monotonic() + 3
    while len(watchers) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(watchers) == 0


async def test_the_http_lookup_follows_the_same_rules(server):
    alice = await _share(server, "alice", ["bob", "carol"])
    bob = await authed(server.url, server.secret, "bob")
    api = ApiClient(server.http_url, server.secret, "alice")
    answer = await api.get("/api/v1/presence?userIds=bob,carol,stranger,bob")
    assert answer.status == 200, answer.body
    assert answer.body == {"presence": [
        {"userId": "bob", "status": "online", "lastSeenAt": None},
        {"userId": "carol", "status": "offline", "lastSeenAt": None},
        {"userId": "stranger", "status": "unknown", "lastSeenAt": None}]}
    assert server.app.presence.watchers.users() == []  # a lookup watches no one

    too_many = ",".join(f"u{i}" for i in range(101))
    for query, status in ((f"?userIds={too_many}", 400), ("?userIds=", 400), ("", 400),
                          ("?userIds=bob,,carol", 400)):
        answer = await api.get("/api/v1/presence" + query)
        assert (answer.status, answer.body["code"]) == (status, "invalid_request"), query
    anonymous = await ApiClient(server.http_url, server.secret).get(
        "/api/v1/presence?userIds=bob")
    assert anonymous.status == 401
    bob.close()
    alice.close()
