"""PROTOCOL sections 9 and 12: requestId echo, mark_read and the read frame."""

from __future__ import annotations

import pytest

from harness.wsclient import WsClient, authed
from tornchat.auth import mint_token


async def _conversation(alice: WsClient, count: int, recipients: list[str]) -> str:
    ack = await alice.request({"type": "send_message", "recipientIds": recipients,
                               "content": "m1"})
    conversation_id = ack["data"]["conversationId"]
    for seq in range(2, count + 1):
        reply = await alice.request({"type": "send_message", "conversationId": conversation_id,
                                     "content": f"m{seq}"})
        assert reply["data"]["seq"] == seq
    return conversation_id


async def test_request_ids_are_echoed_on_the_answer_and_on_errors(server):
    client = await WsClient.connect(server.url)

    hello = await client.request({"type": "auth", "token": mint_token(server.secret, "alice"),
                                  "requestId": "a1"})
    assert hello["type"] == "auth_success" and hello["requestId"] == "a1"
    assert await client.request({"type": "ping", "requestId": "p1"}) == {
        "type": "pong", "requestId": "p1"}
    assert await client.request({"type": "ping"}) == {"type": "pong"}
    ack = await client.request({"type": "send_message", "recipientIds": ["bob"],
                                "content": "hi", "clientMessageId": "c1", "requestId": "s1"})
    assert (ack["type"], ack["requestId"], ack["clientMessageId"]) == ("message_sent", "s1",
                                                                       "c1")
    error = await client.request({"type": "send_message", "conversationId": "c_missing",
                                  "content": "x", "requestId": "s2"})
    assert (error["type"], error["code"], error["requestId"]) == ("error", "not_found", "s2")
    invalid = await client.request({"type": "nonsense", "requestId": "n1"})
    assert (invalid["code"], invalid["requestId"]) == ("invalid_message", "n1")
    typing = await client.request({"type": "typing", "conversationId": "c_missing",
                                   "requestId": "t1"})
    assert (typing["code"], typing["requestId"]) == ("not_found", "t1")


@pytest.mark.parametrize("request_id", ["", "x" * 65, 7, "tab\there", None])
async def test_a_request_id_that_cannot_be_echoed_is_refused(server, request_id):
    client = await authed(server.url, server.secret, "alice")
    frame = {"type": "ping", "requestId": request_id}
    if request_id is None:
        assert await client.request(frame) == {"type": "pong"}  # null means none
        return
    reply = await client.request(frame)
    assert (reply["type"], reply["code"]) == ("error", "invalid_message")
    assert "requestId" not in reply


async def test_mark_read_tells_every_participant_and_answers_the_caller(server):
    alice = await authed(server.url, server.secret, "alice")
    conversation_id = await _conversation(alice, 4, ["bob", "carol"])
    bob = await authed(server.url, server.secret, "bob")
    bob_phone = await authed(server.url, server.secret, "bob")
    carol = await authed(server.url, server.secret, "carol")

    answer = await bob.request({"type": "mark_read", "conversationId": conversation_id,
                                "seq": 3, "requestId": "r1"})
    assert answer["type"] == "read" and answer["requestId"] == "r1"
    data = answer["data"]
    assert (data["conversationId"], data["userId"], data["lastReadSeq"],
            data["unreadCount"]) == (conversation_id, "bob", 3, 1)
    assert data["readAt"].endswith("Z") and len(data["readAt"]) == 24

    phone = await bob_phone.expect("read")  # the reader's other device: its unread count
    assert "requestId" not in phone
    assert phone["data"] == data
    for other in (alice, carol):
        seen = await other.expect("read")
        assert "requestId" not in seen and "unreadCount" not in seen["data"]
        assert seen["data"] == {key: data[key] for key in ("conversationId", "userId",
                                                            "lastReadSeq", "readAt")}
    await bob.nothing_within(0.2)  # the caller gets its answer once


async def test_a_mark_read_that_moves_nothing_answers_only_the_caller(server):
    alice = await authed(server.url, server.secret, "alice")
    conversation_id = await _conversation(alice, 3, ["bob"])
    bob = await authed(server.url, server.secret, "bob")
    moved = await bob.request({"type": "mark_read", "conversationId": conversation_id,
                               "seq": 2})
    await alice.expect("read")
    same = await bob.request({"type": "mark_read", "conversationId": conversation_id,
                              "seq": 1, "requestId": "again"})
    assert same["requestId"] == "again"
    assert same["data"] == moved["data"]  # the current position, readAt of the move
    await alice.nothing_within(0.3)


async def test_the_read_position_is_clamped_to_the_newest_message(server):
    alice = await authed(server.url, server.secret, "alice")
    conversation_id = await _conversation(alice, 2, ["bob"])
    bob = await authed(server.url, server.secret, "bob")
    reply = await bob.request({"type": "mark_read", "conversationId": conversation_id,
                               "seq": 10 ** 9})
    assert (reply["data"]["lastReadSeq"], reply["data"]["unreadCount"]) == (2, 0)
    zero = await bob.request({"type": "mark_read", "conversationId": conversation_id,
                              "seq": 0})
    assert zero["data"]["lastReadSeq"] == 2  # never backwards


async def test_sending_moves_the_senders_position_without_a_read_frame(server):
    alice = await authed(server.url, server.secret, "alice")
    bob = await authed(server.url, server.secret, "bob")
    conversation_id = await _conversation(alice, 3, ["bob"])
    for _ in range(3):
        await bob.expect("new_message")
    reply = await alice.request({"type": "mark_read", "conversationId": conversation_id,
                                 "seq": 1})
    assert (reply["data"]["lastReadSeq"], reply["data"]["unreadCount"]) == (3, 0)
    await bob.nothing_within(0.2)  # the send moved alice to 3; this moved nothing


@pytest.mark.parametrize(("frame", "code"), [
    ({"conversationId": "c_missing", "seq": 1}, "not_found"),
    ({"seq": 1}, "invalid_message"),
    ({"conversationId": "c_1", "seq": -1}, "invalid_message"),
    ({"conversationId": "c_1", "seq": "1"}, "invalid_message"),
    ({"conversationId": "c_1", "seq": True}, "invalid_message"),
])
async def test_a_bad_mark_read_gets_an_error_with_its_request_id(server, frame, code):
    bob = await authed(server.url, server.secret, "bob")
    reply = await bob.request({"type": "mark_read", "requestId": "r", **frame})
    assert (reply["type"], reply["code"], reply["requestId"]) == ("error", code, "r")


async def test_mark_read_in_someone_elses_conversation_is_forbidden(server):
    alice = await authed(server.url, server.secret, "alice")
    conversation_id = await _conversation(alice, 1, ["bob"])
    mallory = await authed(server.url, server.secret, "mallory")
    reply = await mallory.request({"type": "mark_read", "conversationId": conversation_id,
                                   "seq": 1})
    assert (reply["type"], reply["code"]) == ("error", "forbidden")


async def test_auth_error_echoes_the_request_id_and_an_unauthenticated_frame_closes(server):
    client = await WsClient.connect(server.url)
    reply = await client.request({"type": "auth", "token": "nonsense", "requestId": "a"})
    assert (reply["type"], reply["requestId"]) == ("auth_error", "a")
    assert await client.wait_closed() == 4001
    early = await WsClient.connect(server.url)
    reply = await early.request({"type": "ping", "requestId": 5})  # a bad id, before auth
    assert reply == {"type": "auth_error", "error": "Not authenticated"}
    assert await early.wait_closed() == 4001


def test_an_older_read_position_is_never_announced_after_a_newer_one():
    from tornchat.service import PublishedReads

    announced = PublishedReads(capacity=2)
    assert announced.newer("c", "bob", 20)
    assert not announced.newer("c", "bob", 10)  # finished late: not announced
    assert not announced.newer("c", "bob", 20)
    assert announced.newer("c", "bob", 21)
    assert announced.newer("c", "ann", 1) and announced.newer("d", "bob", 1)
    assert announced.newer("c", "bob", 5)  # the least recently moved was let go
