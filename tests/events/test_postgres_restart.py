"""PostgreSQL stopped and started while clients send (a real server process
on its own ``initdb``/``pg_ctl`` PostgreSQL, a real Kafka-protocol broker).

During the outage every send is answered ``unavailable``, never
``message_sent``. Once PostgreSQL is back the writer, the readers (HTTP) and
the relay reconnect on their own within 2 s. Afterwards every acknowledged
message is in the database and in Kafka, exactly once by ``dedupeId``.
"""

from __future__ import annotations

import asyncio
import time

import psycopg2
import pytest

from harness.http import ApiClient
from harness.ports import wait_until
from harness.postgres_server import private_postgres
from harness.server import TEST_SECRET, ServerProcess
from harness.services import migrated
from harness.wsclient import authed
from tests.events.conftest import consume, pending_message_ids

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.slow]
RECONNECT_WITHIN = 2.0


async def test_a_postgres_restart_under_load_loses_nothing_acknowledged(tmp_path, kafka_broker):
    with private_postgres() as postgres:
        database_url = migrated(postgres.url)
        server = ServerProcess(cwd=str(tmp_path), env={
            "DATABASE_URL": database_url, "KAFKA_BROKER": kafka_broker.bootstrap,
            "TORNCHAT_RATE_LIMIT_PER_SECOND": "1000", "TORNCHAT_RATE_LIMIT_BURST": "1000",
            "TORNCHAT_OUTBOX_POLL_INTERVAL": "0.05"}).start()
        try:
            await _exercise(server, postgres, database_url, kafka_broker.bootstrap)
        finally:
            assert server.stop() == 0, server.logs()[-3000:]
        logs = server.logs()
    assert "Traceback" not in logs, logs[-3000:]


async def _exercise(server, postgres, database_url: str, bootstrap: str) -> None:
    alice = await authed(server.ws_url, TEST_SECRET, "alice")
    api = ApiClient(server.http_url, TEST_SECRET, "alice")
    first = await alice.request({"type": "send_message", "recipientIds": ["bob"],
                                 "content": "first"})
    conversation_id = first["data"]["conversationId"]
    acknowledged = [first["data"]["id"]]
    outcomes: list[tuple[float, str]] = []  # (when answered, frame type or error code)
    sending = True

    async def send_forever() -> None:
        count = 0
        while sending:
            count += 1
            reply = await alice.request({"type": "send_message", "content": f"m{count}",
                                         "conversationId": conversation_id,
                                         "clientMessageId": f"c{count}"}, timeout=10)
            if reply["type"] == "message_sent":
                acknowledged.append(reply["data"]["id"])
                outcomes.append((time.monotonic(), "message_sent"))
            else:
                assert (reply["type"], reply["code"]) == ("error", "unavailable"), reply
                outcomes.append((time.monotonic(), "unavailable"))
                await asyncio.sleep(0.02)

    sender = asyncio.ensure_future(send_forever())
    await asyncio.sleep(1.0)
    postgres.stop("fast")
    stopped_at = time.monotonic()
    await asyncio.sleep(2.0)
    down = [kind for at, kind in outcomes if at > stopped_at + 0.5]
    assert down and set(down) == {"unavailable"}, down[-10:]
    assert server.health()[0] == 503

    postgres.start()
    started_at = time.monotonic()
    while not any(at > started_at and kind == "message_sent" for at, kind in outcomes):
        assert time.monotonic() - started_at < RECONNECT_WITHIN + 3, "the writer never recovered"
        await asyncio.sleep(0.02)
    writer_back = min(at for at, kind in outcomes
                      if at > started_at and kind == "message_sent") - started_at
    while (await api.get("/api/v1/conversations")).status != 200:
        assert time.monotonic() - started_at < RECONNECT_WITHIN + 3, "reads never recovered"
        await asyncio.sleep(0.02)
    readers_back = time.monotonic() - started_at
    print(f"writer back {writer_back:.2f}s, readers back {readers_back:.2f}s after the start")
    assert writer_back < RECONNECT_WITHIN, f"first acknowledged send {writer_back:.2f}s after"
    assert readers_back < RECONNECT_WITHIN, f"first good read {readers_back:.2f}s after"

    await asyncio.sleep(1.0)
    sending = False
    await sender
    # the relay: every event of the outage published, at most 2 s after the last send
    wait_until(lambda: not pending_message_ids(database_url), RECONNECT_WITHIN,
               "the relay to drain")
    wait_until(lambda: server.health()[0] == 200, 5, "/health 200 again")
    alice.close()

    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id FROM message WHERE conversation_id = %s", (conversation_id,))
        stored = {row[0] for row in cursor.fetchall()}
    assert set(acknowledged) <= stored, "an acknowledged message is missing"
    assert len(acknowledged) == len(set(acknowledged))
    records = consume(bootstrap, len(stored))
    dedupe_ids = [record.event["dedupeId"] for record in records]
    assert len(dedupe_ids) == len(set(dedupe_ids)), "an event was published twice"
    assert {record.event["messageId"] for record in records} == stored
