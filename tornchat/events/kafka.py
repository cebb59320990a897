"""The Kafka side of the relay: one idempotent ``confluent_kafka.Producer``.

:class:`EventPublisher` publishes a batch of outbox rows and reports which of
them the broker acknowledged (``acks=all``, delivery report without error).
Every produced message gets exactly one delivery report: librdkafka retries
until ``message.timeout.ms`` and then fails it, so after :meth:`publish`
returns nothing of the batch is left inside the producer and the caller can
safely leave unacknowledged rows in the outbox for the next round.

The producer is replaced by a fresh one after any failed batch or fatal
error: an idempotent producer whose broker lost its producer id (a broker or
cluster restart) otherwise keeps timing out or turns fatal, and a new
producer id costs nothing because the outbox, not the producer, guarantees
delivery.

Thread rule: not thread-safe; the relay thread owns it, and every callback
(delivery report, error) runs on that thread inside ``poll()``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from tornchat.events.outbox import OutboxRow

log = logging.getLogger(__name__)

#: errors that mean "no broker reachable" rather than one bad message
_BROKER_DOWN = frozenset({KafkaError._ALL_BROKERS_DOWN})
#: a single broker's connection errors: librdkafka retries them by itself
_TRANSIENT = frozenset({KafkaError._TRANSPORT, KafkaError._RESOLVE})
_POLL_SECONDS = 0.05
_PURGE_GRACE = 2.0


class EventPublisher:
    """Publishes outbox rows to ``topic`` with key = conversation id."""

    def __init__(self, broker: str, topic: str, publish_timeout: float,
                 client_id: str | None = None) -> None:
        self.topic = topic
        self._config: dict[str, Any] = {
            "bootstrap.servers": broker,
            "client.id": client_id or f"tornchat-relay-{os.getpid()}",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": int(publish_timeout * 1000),
            # the Java client's partitioner: a conversation lands on the same
            # partition whichever client produced it
            "partitioner": "murmur2_random",
            "reconnect.backoff.max.ms": 2000,
            "error_cb": self._on_error,
            "logger": log,
        }
        self._publish_timeout = publish_timeout
        self._producer: Producer | None = None
        #: set by error callbacks, read and cleared by the relay loop
        self.broker_down = False
        self._fatal = False

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(self._config)
            self.broker_down = False
            self._fatal = False
        return self._producer

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = True
            log.error("kafka producer fatal error; it will be replaced",
                      extra={"error": str(error)})
        elif error.code() in _BROKER_DOWN:
            if not self.broker_down:
                log.warning("kafka broker unreachable", extra={"error": str(error)})
            self.broker_down = True
        elif error.code() in _TRANSIENT:
            log.debug("kafka connection error", extra={"error": str(error)})
        else:
            log.warning("kafka producer error", extra={"error": str(error)})

    def probe(self, timeout: float) -> bool:
        """True if a broker answers a metadata request for the topic."""
        try:
            self.producer.list_topics(self.topic, timeout=timeout)
        except KafkaException:
            return False
        self.broker_down = False
        return True

    def service(self) -> None:
        """Serve queued callbacks (errors) while idle."""
        if self._producer is not None:
            self._poll(0)

    def _poll(self, timeout: float) -> None:
        try:
            assert self._producer is not None
            self._producer.poll(timeout)
        except KafkaException as exc:  # fatal errors surface here too
            self._fatal = True
            log.error("kafka producer failed", extra={"error": str(exc)})

    def publish(self, rows: Sequence[OutboxRow], give_up: Callable[[], bool]) -> set[int]:
        """Produce ``rows`` in order; the ids acknowledged by the broker.

        Blocks until every row has its delivery report (at most about
        ``publish_timeout``), or until ``give_up()`` turns true (shutdown
        deadline): then whatever is still queued or in flight is purged and
        counts as not acknowledged.
        """
        producer = self.producer
        delivered: set[int] = set()
        reported = 0

        def report_for(row_id: int) -> Callable[[KafkaError | None, Any], None]:
            def report(error: KafkaError | None, _message: Any) -> None:
                nonlocal reported
                reported += 1
                if error is None:
                    delivered.add(row_id)
            return report

        produced = 0
        for row in rows:
            if self._fatal or give_up():
                break
            while True:
                try:
                    producer.produce(self.topic, key=row.conversation_id.encode(),
                                     value=row.payload.encode(), on_delivery=report_for(row.id))
                    produced += 1
                    break
                except BufferError:
                    self._poll(_POLL_SECONDS)
                except KafkaException as exc:
                    self._fatal = True
                    log.error("kafka produce failed", extra={"error": str(exc)})
                    break
            if self._fatal:
                break
        hard_stop = time.monotonic() + self._publish_timeout + 5.0
        purged_at: float | None = None
        while reported < produced:
            now = time.monotonic()
            if purged_at is None and (self._fatal or give_up() or now > hard_stop):
                producer.purge(in_queue=True, in_flight=True, blocking=True)
                purged_at = now
            elif purged_at is not None and now > purged_at + _PURGE_GRACE:
                break  # reports that never came count as not acknowledged
            self._poll(_POLL_SECONDS)
        if len(delivered) < len(rows) or self._fatal:
            self.reset()
        return delivered

    def reset(self) -> None:
        """Drop the producer (nothing is outstanding); the next use makes a new one."""
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.purge(in_queue=True, in_flight=True, blocking=True)
            producer.flush(0)

    def close(self) -> None:
        self.reset()
