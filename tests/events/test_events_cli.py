"""``tornchat events status|drain|tail``: events kept while KAFKA_BROKER was unset."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tornchat.storage.database import open_database
from tornchat.storage.readstate import ReadPositions
from tornchat.storage.schema import migrate
from tornchat.storage.store import ChatStore

pytestmark = pytest.mark.kafka


def events(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k != "KAFKA_BROKER" and not k.startswith("TORNCHAT_")}
    return subprocess.run([sys.executable, "-m", "tornchat.cli", "events", *args],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_status_drain_and_tail(tmp_path, kafka_broker):
    url = f"sqlite:///{tmp_path}/chat.db"
    migrate(open_database(url, 1))
    store = ChatStore(open_database(url, 1))
    conversation = store.find_or_create_conversation(frozenset({"alice", "bob"}))
    ids = [store.store_message("alice", conversation, ("alice", "bob"), f"m{n}").id
           for n in range(3)]
    ReadPositions(store).mark_read("bob", conversation, 2)
    store.close()

    status = events("status", DATABASE_URL=url)
    assert json.loads(status.stdout)["pending"] == 4, status.stderr

    refused = events("drain", DATABASE_URL=url)
    assert refused.returncode == 2 and "KAFKA_BROKER" in refused.stderr

    drained = events("drain", DATABASE_URL=url, KAFKA_BROKER=kafka_broker.bootstrap)
    assert drained.returncode == 0, drained.stderr
    assert json.loads(drained.stdout.splitlines()[-1]) == {"published": 4, "pending": 0}
    assert json.loads(events("status", DATABASE_URL=url).stdout)["pending"] == 0

    tail = events("tail", "--from-beginning", "--count", "3", "--timeout", "30", "--keys",
                  KAFKA_BROKER=kafka_broker.bootstrap)
    assert tail.returncode == 0, tail.stderr
    lines = [line.split("\t", 1) for line in tail.stdout.splitlines()]
    assert [key for key, _ in lines] == [conversation] * 3
    assert [json.loads(value)["messageId"] for _, value in lines] == ids

    reads = events("tail", "--from-beginning", "--count", "1", "--timeout", "30",
                   "--type", "ConversationRead", KAFKA_BROKER=kafka_broker.bootstrap)
    assert reads.returncode == 0, reads.stderr
    [line] = reads.stdout.splitlines()
    assert json.loads(line)["eventType"] == "ConversationRead"
    assert (json.loads(line)["userId"], json.loads(line)["lastReadSeq"]) == ("bob", 2)
