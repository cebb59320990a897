"""PROTOCOL section 11: ``sync`` replays what a client missed, exactly once and
in order, while live messages keep arriving (one process; across instances in
tests/fanout/test_sync_cluster.py)."""

from __future__ import annotations

import asyncio

import pytest

from harness.wsclient import WsClient, authed
from tornchat.auth import mint_token


async def _send(client: WsClient, conversation_id: str, content: str) -> dict:
    """Send; the acknowledged message (what arrives for the sender meanwhile is skipped)."""
    await client.send({"type": "send_message", "conversationId": conversation_id,
                       "content": content})
    while True:
        reply = await client.recv()
        if reply["type"] == "message_sent":
            return reply["data"]
        assert reply["type"] == "new_message", reply


async def _open(client: WsClient, recipients: list[str], count: int) -> str:
    ack = await client.request({"type": "send_message", "recipientIds": recipients,
                                "content": "1"})
    conversation_id = ack["data"]["conversationId"]
    for index in range(2, count + 1):
        await _send(client, conversation_id, str(index))
    return conversation_id


async def _until_sync_done(client: WsClient) -> tuple[list[dict], dict]:
    frames = []
    while True:
        frame = await client.recv()
        if frame["type"] == "sync_done":
            return frames, frame
        frames.append(frame)


async def test_sync_replays_the_missed_messages_in_order_then_sync_done(server):
    alice = await authed(server.url, server.secret, "alice")
    first = await _open(alice, ["bob"], 5)
    second = await _open(alice, ["carol", "bob"], 2)
    bob = await authed(server.url, server.secret, "bob")
    await bob.send({"type": "sync", "conversations": {first: 2, second: 0},
                    "requestId": "s1"})
    frames, done = await _until_sync_done(bob)
    assert [(f["type"], f["data"]["conversationId"], f["data"]["seq"]) for f in frames] == [
        ("new_message", first, 3), ("new_message", first, 4), ("new_message", first, 5),
        ("new_message", second, 1), ("new_message", second, 2)]
    assert frames[0]["data"]["content"] == "3"
    assert done["requestId"] == "s1"
    assert done["data"] == {"errors": [], "conversations": [
        {"id": first, "lastSeq": 5, "lastReadSeq": 0, "unreadCount": 5, "complete": True,
         "missingBeforeSeq": None},
        {"id": second, "lastSeq": 2, "lastReadSeq": 0, "unreadCount": 2, "complete": True,
         "missingBeforeSeq": None}]}


async def test_a_client_that_is_up_to_date_gets_only_sync_done(server):
    alice = await authed(server.url, server.secret, "alice")
    conversation_id = await _open(alice, ["bob"], 3)
    await alice.send({"type": "sync", "conversations": {conversation_id: 3}})
    frames, done = await _until_sync_done(alice)
    assert frames == [] and "requestId" not in done
    assert done["data"]["conversations"][0]["unreadCount"] == 0  # alice sent them all


async def test_more_than_the_replay_limit_replays_the_newest_and_names_the_gap(start_server):
    chat = await start_server(sync_max_replay=5)
    alice = await authed(chat.url, chat.secret, "alice")
    conversation_id = await _open(alice, ["bob"], 12)
    bob = await authed(chat.url, chat.secret, "bob")
    await bob.send({"type": "sync", "conversations": {conversation_id: 3}})
    frames, done = await _until_sync_done(bob)
    assert [f["data"]["seq"] for f in frames] == [8, 9, 10, 11, 12]
    window = done["data"]["conversations"][0]
    assert (window["complete"], window["missingBeforeSeq"]) == (False, 8)
    # what is missing is exactly what history returns for (known, missingBeforeSeq)
    from harness.http import ApiClient
    page = (await ApiClient(chat.http_url, chat.secret, "bob").get(
        f"/api/v1/conversations/{conversation_id}/messages?afterSeq=3&beforeSeq=8")).body
    assert [m["seq"] for m in page["messages"]] == [4, 5, 6, 7]


async def test_with_the_default_limit_the_newest_100_are_replayed(server):
    alice = await authed(server.url, server.secret, "alice")
    conversation_id = await _open(alice, ["bob"], 130)
    bob = await authed(server.url, server.secret, "bob")
    await bob.send({"type": "sync", "conversations": {conversation_id: 10}})
    frames, done = await _until_sync_done(bob)
    assert [f["data"]["seq"] for f in frames] == list(range(31, 131))
    window = done["data"]["conversations"][0]
    assert (window["complete"], window["missingBeforeSeq"], window["lastSeq"]) == (
        False, 31, 130)


async def test_conversations_the_user_may_not_read_are_listed_as_errors(server):
    alice = await authed(server.url, server.secret, "alice")
    theirs = await _open(alice, ["bob"], 1)
    mine = await _open(alice, ["mallory"], 1)
    mallory = await authed(server.url, server.secret, "mallory")
    await mallory.send({"type": "sync", "conversations": {theirs: 0, "c_nope": 4, mine: 1}})
    frames, done = await _until_sync_done(mallory)
    assert frames == []
    assert done["data"]["errors"] == [{"id": theirs, "code": "forbidden"},
                                      {"id": "c_nope", "code": "not_found"}]
    assert [w["id"] for w in done["data"]["conversations"]] == [mine]


@pytest.mark.parametrize("conversations", [[], "x", {"c_1": -1}, {"c_1": "3"},
                                           {"c_1": True}, {"": 1}, {"c_1": 1.5}])
async def test_a_malformed_sync_is_an_invalid_message(server, conversations):
    bob = await authed(server.url, server.secret, "bob")
    reply = await bob.request({"type": "sync", "conversations": conversations,
                               "requestId": "bad"})
    assert (reply["type"], reply["code"], reply["requestId"]) == ("error", "invalid_message",
                                                                  "bad")


async def test_a_sync_may_list_at_most_the_configured_number(start_server):
    chat = await start_server(sync_max_conversations=3)
    bob = await authed(chat.url, chat.secret, "bob")
    reply = await bob.request({"type": "sync",
                               "conversations": {f"c_{i}": 0 for i in range(4)}})
    assert reply["code"] == "invalid_message" and "3" in reply["error"]


async def test_messages_delivered_live_before_the_sync_are_not_replayed(server):
    alice = await authed(server.url, server.secret, "alice")
    conversation_id = await _open(alice, ["bob"], 2)
    bob = await authed(server.url, server.secret, "bob")
    await _send(alice, conversation_id, "3")
    assert (await bob.expect("new_message"))["data"]["seq"] == 3
    await bob.send({"type": "sync", "conversations": {conversation_id: 1}})
    frames, _ = await _until_sync_done(bob)
    assert [f["data"]["seq"] for f in frames] == [2]  # 3 came live already


async def test_the_senders_own_acknowledged_messages_are_not_replayed_to_it(server):
    alice = await authed(server.url, server.secret, "alice")
    conversation_id = await _open(alice, ["bob"], 3)
    await alice.send({"type": "sync", "conversations": {conversation_id: 0}})
    frames, _ = await _until_sync_done(alice)
    assert frames == []  # every one was acknowledged to this very connection


async def test_live_messages_during_the_replay_are_held_then_released_once_in_order(
        start_server, database_url):
    """Messages stored and published while the replay is being read are held
    back, then written after it, minus those the replay already carried."""
    chat = await start_server(database_url=database_url)
    alice = await authed(chat.url, chat.secret, "alice")
    carol = await authed(chat.url, chat.secret, "carol")
    conversation_id = await _open(alice, ["bob", "carol"], 20)
    bob = await authed(chat.url, chat.secret, "bob")

    service = chat.app.service
    read_windows = service.sync_windows
    reading, release = asyncio.Event(), asyncio.Event()

    async def slow_read(*args, **kwargs):
        reading.set()
        await release.wait()  # the live messages below arrive while the replay is read
        return await read_windows(*args, **kwargs)

    service.sync_windows = slow_read
    await bob.send({"type": "sync", "conversations": {conversation_id: 4}})
    await asyncio.wait_for(reading.wait(), 5)
    for index in range(10):  # stored before the read: in the replay and held
        await _send(alice if index % 2 else carol, conversation_id, f"during {index}")
    release.set()
    later = asyncio.ensure_future(asyncio.gather(
        *[_send(carol, conversation_id, f"after {index}") for index in range(3)]))
    seqs: list[int] = []
    done = None
    while len(seqs) < 29 or done is None:
        frame = await bob.recv()
        if frame["type"] == "new_message":
            seqs.append(frame["data"]["seq"])
        elif frame["type"] == "sync_done":
            done = frame
    await later
    assert seqs == list(range(5, 34))  # 5..30 replayed or released, 31..33 live: once each
    assert done["data"]["conversations"][0]["complete"] is True
    await bob.nothing_within(0.3)


async def test_a_sync_sent_right_behind_auth_gets_no_live_message_ahead_of_it(server):
    """While messages keep coming, a client that pipelines ``sync`` behind
    ``auth`` gets the replay first, then live ones: every seq once, in order."""
    alice = await authed(server.url, server.secret, "alice")
    conversation_id = await _open(alice, ["bob"], 10)
    streaming = True

    async def stream() -> int:
        sent = 10
        while streaming:
            sent = (await _send(alice, conversation_id, "live"))["seq"]
        return sent

    sender = asyncio.ensure_future(stream())
    for _ in range(5):
        bob = await WsClient.connect(server.url)
        await bob.send({"type": "auth", "token": mint_token(server.secret, "bob")})
        await bob.send({"type": "sync", "conversations": {conversation_id: 3}})
        assert (await bob.recv())["type"] == "auth_success"
        seqs: list[int] = []
        while len(seqs) < 15:
            frame = await bob.recv()
            if frame["type"] == "new_message":
                seqs.append(frame["data"]["seq"])
        assert seqs == list(range(4, 19)), seqs
        bob.close()
    streaming = False
    await sender


async def test_a_client_that_only_listens_gets_live_messages_at_once(server):
    bob = await authed(server.url, server.secret, "bob")
    alice = await authed(server.url, server.secret, "alice")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await alice.request({"type": "send_message", "recipientIds": ["bob"], "content": "hi"})
    assert (await bob.expect("new_message"))["data"]["content"] == "hi"
    assert loop.time() - started < 1.5  # the hold waits at most TORNCHAT_SYNC_HOLD (0.25 s)


async def test_a_sync_sent_on_auth_success_gets_no_live_message_ahead_of_it(start_server):
    """The usual flow: wait for auth_success, then sync. Live messages wait
    (up to TORNCHAT_SYNC_HOLD) for that first frame."""
    chat = await start_server(sync_hold=5.0)
    alice = await authed(chat.url, chat.secret, "alice")
    conversation_id = await _open(alice, ["bob"], 6)
    bob = await authed(chat.url, chat.secret, "bob")
    await _send(alice, conversation_id, "7")  # live, while bob has not synced yet
    await bob.send({"type": "sync", "conversations": {conversation_id: 2}})
    frames, _ = await _until_sync_done(bob)
    assert [f["data"]["seq"] for f in frames] == [3, 4, 5, 6, 7]
    await bob.nothing_within(0.3)  # 7 came once, in its place


async def test_a_first_frame_other_than_sync_releases_the_held_messages(start_server):
    chat = await start_server(sync_hold=5.0)
    alice = await authed(chat.url, chat.secret, "alice")
    conversation_id = await _open(alice, ["bob"], 1)
    bob = await authed(chat.url, chat.secret, "bob")
    await _send(alice, conversation_id, "2")
    await bob.send({"type": "ping"})
    released = await bob.expect("new_message")  # let go by the first frame, before its answer
    assert released["data"]["seq"] == 2
    assert await bob.recv() == {"type": "pong"}
