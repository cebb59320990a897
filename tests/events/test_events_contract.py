"""``MessageSent`` events on a real broker match PROTOCOL section 7 exactly."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from harness.kafka import TOPIC
from harness.server import TEST_SECRET
from harness.wsclient import authed
from tests.events.conftest import consume, kcat_env, outbox_rows, send_acked

pytestmark = pytest.mark.kafka

FIELDS = ["eventType", "messageId", "conversationId", "senderId", "recipientIds", "content",
          "timestamp", "dedupeId", "source", "version"]


async def test_one_event_per_message_with_every_field_keyed_by_conversation(kafka_chat,
                                                                          tmp_path):
    server, database_url = kafka_chat.server, kafka_chat.database_url
    alice = await authed(server.ws_url, TEST_SECRET, "alice")
    carol = await authed(server.ws_url, TEST_SECRET, "carol")
    first = await send_acked(alice, {"recipientIds": ["bob"], "content": "hello bob"})
    direct = first["conversationId"]
    second = await send_acked(alice, {"conversationId": direct,
                                      "content": "ça va ? 👋 \"quoted\"\nnew line"})
    group = await send_acked(alice, {"recipientIds": ["carol", "bob"],
                                     "content": "hello team"})
    reply = await send_acked(carol, {"conversationId": group["conversationId"],
                                     "content": "hi all"})
    sent = [first, second, group, reply]
    alice.close()
    carol.close()

    records = consume(kafka_chat.bootstrap, len(sent))

    participants = {direct: {"alice", "bob"},
                    group["conversationId"]: {"alice", "bob", "carol"}}
    outbox = {row["message_id"]: row for row in outbox_rows(database_url)}
    assert len(records) == len(sent), [r.event for r in records]
    by_id = {record.event["messageId"]: record for record in records}
    assert set(by_id) == {message["id"] for message in sent}
    for message in sent:
        record = by_id[message["id"]]
        event = record.event
        assert list(event) == FIELDS
        assert event == {
            "eventType": "MessageSent",
            "messageId": message["id"],
            "conversationId": message["conversationId"],
            "senderId": message["senderId"],
            "recipientIds": sorted(participants[message["conversationId"]]
                                   - {message["senderId"]}),
            "content": message["content"],
            "timestamp": message["createdAt"],
            "dedupeId": event["dedupeId"],
            "source": "chat-service",
            "version": 1,
        }
        assert str(uuid.UUID(event["dedupeId"])) == event["dedupeId"]
        assert record.key == message["conversationId"]
        # the value is the outbox payload, byte for byte, in UTF-8
        assert record.value == outbox[message["id"]]["payload"].encode("utf-8")
        assert outbox[message["id"]]["dedupe_id"] == event["dedupeId"]
        assert outbox[message["id"]]["sent_at"] is not None
    for conversation in participants:
        partitions = {r.partition for r in records if r.key == conversation}
        assert len(partitions) == 1, "one conversation, one partition"
    direct_events = sorted((r for r in records if r.key == direct), key=lambda r: r.offset)
    assert [r.event["messageId"] for r in direct_events] == [first["id"], second["id"]]

    env = kcat_env(str(tmp_path))
    if env is None:
        return
    # a second, independent client sees the same records
    out = subprocess.run(["kcat", "-b", kafka_chat.bootstrap, "-t", TOPIC, "-C", "-o",
                          "beginning", "-e", "-q", "-f", "%k\t%s\n"],
                         env=env, capture_output=True, timeout=30, check=True).stdout
    lines = [line.split(b"\t", 1) for line in out.splitlines() if line]
    assert sorted((key.decode(), json.loads(value)["messageId"]) for key, value in lines) == \
        sorted((r.key, r.event["messageId"]) for r in records)
