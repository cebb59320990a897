"""Kafka SIGKILLed while messages are sent: chat goes on, the backlog drains in order."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from harness.ports import wait_until
from harness.server import TEST_SECRET, ServerProcess
from harness.wsclient import authed
from tests.events.conftest import consume, outbox_rows, pending_message_ids, send_acked

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_broker_killed_while_sending_then_every_missing_event_arrives_in_order(
        tmp_path, kafka_broker):
    database_url = f"sqlite:///{tmp_path}/chat.db"
    server = ServerProcess(cwd=str(tmp_path), env={
        "KAFKA_BROKER": kafka_broker.bootstrap, "DATABASE_URL": database_url,
        "TORNCHAT_KAFKA_PUBLISH_TIMEOUT": "2", "TORNCHAT_RATE_LIMIT_PER_SECOND": "1000",
        "TORNCHAT_RATE_LIMIT_BURST": "1000"}).start()
    try:
        alice = await authed(server.ws_url, TEST_SECRET, "alice")
        targets = [["bob"], ["carol"], ["bob", "carol"]]
        firsts = [await send_acked(alice, {"recipientIds": users, "content": "0"})
                  for users in targets]
        conversations = [message["conversationId"] for message in firsts]
        seq_of = {message["id"]: message["seq"] for message in firsts}
        counter = itertools.count(1)

        async def send_round() -> None:
            for conversation in conversations:
                message = await send_acked(alice, {"conversationId": conversation,
                                                   "content": f"m{next(counter)}"})
                seq_of[message["id"]] = message["seq"]

        for _ in range(10):
            await send_round()
        kafka_broker.kill()
        for _ in range(10):  # every send is still acknowledged
            await send_round()
        deadline_rounds = 0
        while server.health()[1]["dependencies"]["kafka"] != "down":
            await send_round()
            await asyncio.sleep(0.05)
            deadline_rounds += 1
            assert deadline_rounds < 200, "kafka never reported down"
        status, body = server.health()
        assert status == 200 and body["dependencies"]["kafka"] == "down", body
        await send_round()
        # The broker is dead, so nothing is acknowledged from here on. What it
        # did acknowledge died with its in-memory log; every other event,
        # this backlog and all later ones, must reach the restarted broker.
        acknowledged = {row["message_id"] for row in outbox_rows(database_url)
                        if row["sent_at"] is not None}
        assert len(pending_message_ids(database_url)) >= 3 * 11

        kafka_broker.start()
        for _ in range(5):
            await send_round()
        wait_until(lambda: not pending_message_ids(database_url), 30, "the outbox to drain")
        wait_until(lambda: server.health()[1]["dependencies"]["kafka"] == "ok", 10, "kafka ok")
        alice.close()
        expected = {row["message_id"] for row in outbox_rows(database_url)} - acknowledged
        records = consume(kafka_broker.bootstrap, len(expected))
    finally:
        assert server.stop() == 0

    ids = [record.event["messageId"] for record in records]
    assert len(ids) == len(set(ids)), "each missing event arrives once"
    assert set(ids) == expected
    for conversation in conversations:
        seqs = [seq_of[r.event["messageId"]] for r in sorted(records, key=lambda r: r.offset)
                if r.key == conversation]
        assert seqs == sorted(seqs), f"{conversation} out of order: {seqs}"
        assert seqs, conversation

