"""Outbox rows survive a crash; SIGTERM publishes what is pending within the budget."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from harness.ports import free_port, wait_until
from harness.server import TEST_SECRET, ServerProcess
from harness.wsclient import authed
from tests.events.conftest import consume, outbox_rows, pending_message_ids, send_acked

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_worker_killed_between_commit_and_publish_sends_after_restart(
        tmp_path, kafka_broker):
    database_url = f"sqlite:///{tmp_path}/chat.db"
    # A worker whose broker never answers: every event is committed and then
    # stuck between commit and publish when the worker is SIGKILLed.
    crashed = ServerProcess(cwd=str(tmp_path), env={
        "KAFKA_BROKER": f"127.0.0.1:{free_port()}", "DATABASE_URL": database_url}).start()
    try:
        status, body = crashed.health()
        assert status == 200 and body["dependencies"]["kafka"] == "down", body
        alice = await authed(crashed.ws_url, TEST_SECRET, "alice")
        sent = [await send_acked(alice, {"recipientIds": ["bob"], "content": "one"})]
        for content in ("two", "three", "four"):
            sent.append(await send_acked(alice, {"conversationId": sent[0]["conversationId"],
                                                 "content": content}))
        alice.close()
    finally:
        assert crashed.proc is not None
        crashed.proc.kill()
        crashed.proc.wait(10)
    assert pending_message_ids(database_url) == [message["id"] for message in sent]

    restarted = ServerProcess(cwd=str(tmp_path), env={
        "KAFKA_BROKER": kafka_broker.bootstrap, "DATABASE_URL": database_url,
        "TORNCHAT_SHUTDOWN_TIMEOUT": "5"}).start()
    try:
        wait_until(lambda: not pending_message_ids(database_url), 15, "the outbox to drain")
        # SIGTERM right after a burst: drain publishes it before exiting
        bob = await authed(restarted.ws_url, TEST_SECRET, "bob")
        for n in range(20):
            sent.append(await send_acked(bob, {"conversationId": sent[0]["conversationId"],
                                               "content": f"late {n}"}))
        restarted.signal(signal.SIGTERM)
        started = time.monotonic()
        # waited for in a thread: bob's client must answer the drain's close
        # frame, or the drain waits out its whole timeout for him
        assert await asyncio.to_thread(restarted.wait, 10) == 0
        assert time.monotonic() - started < 5
        bob.close()
    finally:
        restarted.stop()

    assert pending_message_ids(database_url) == []
    records = consume(kafka_broker.bootstrap, len(sent))
    assert [r.event["messageId"] for r in sorted(records, key=lambda r: r.offset)] == \
        [message["id"] for message in sent]
    assert all(row["attempts"] == 1 for row in outbox_rows(database_url))
