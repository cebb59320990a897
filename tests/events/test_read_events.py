"""``ConversationRead`` events (PROTOCOL section 12) on a real broker: one per
stored move, by ``mark_read`` or its HTTP twin, none for a request that moved
nothing nor for a sender's implicit move."""

from __future__ import annotations

import uuid

import pytest

from harness.http import ApiClient
from harness.server import TEST_SECRET
from harness.wsclient import authed
from tests.events.conftest import consume, outbox_rows, send_acked

pytestmark = pytest.mark.kafka

FIELDS = ["eventType", "conversationId", "userId", "lastReadSeq", "timestamp", "dedupeId",
          "source", "version"]


async def test_each_stored_move_is_one_event_and_a_no_move_is_none(kafka_chat):
    server = kafka_chat.server
    alice = await authed(server.ws_url, TEST_SECRET, "alice")
    bob = await authed(server.ws_url, TEST_SECRET, "bob")
    first = await send_acked(alice, {"recipientIds": ["bob"], "content": "one"})
    conversation_id = first["conversationId"]
    for content in ("two", "three"):
        await send_acked(alice, {"conversationId": conversation_id, "content": content})
    moved = await bob.request({"type": "mark_read", "conversationId": conversation_id,
                               "seq": 2})
    while moved["type"] != "read":
        moved = await bob.recv()
    nothing = await bob.request({"type": "mark_read", "conversationId": conversation_id,
                                 "seq": 1})  # no move: no event
    assert nothing["data"]["lastReadSeq"] == 2
    over_http = await ApiClient(server.http_url, TEST_SECRET, "bob").post(
        f"/api/v1/conversations/{conversation_id}/read", {"seq": 3})
    assert over_http.body == {"lastReadSeq": 3, "unreadCount": 0}
    alice.close()
    bob.close()
    records = consume(kafka_chat.bootstrap, 5)  # 3 MessageSent + 2 ConversationRead


    reads = [record for record in records if record.event["eventType"] == "ConversationRead"]
    assert len(records) == 5 and len(reads) == 2, [r.event for r in records]
    assert [r.event["lastReadSeq"] for r in sorted(reads, key=lambda r: r.offset)] == [2, 3]
    for record in reads:
        event = record.event
        assert list(event) == FIELDS
        assert record.key == conversation_id
        assert (event["conversationId"], event["userId"], event["source"],
                event["version"]) == (conversation_id, "bob", "chat-service", 1)
        assert uuid.UUID(event["dedupeId"])
        assert event["timestamp"].endswith("Z") and len(event["timestamp"]) == 24
    assert reads[0].event["timestamp"] == moved["data"]["readAt"]
    # each event left the outbox with the dedupeId it was stored with
    stored = {row["dedupe_id"] for row in outbox_rows(kafka_chat.database_url)}
    assert {r.event["dedupeId"] for r in reads} <= stored
