"""The outbox relay: publishes committed events (``MessageSent``,
``ConversationRead``) to Kafka.

Chat never waits for Kafka. The transaction that stores a message or a read
position writes its event into ``outbox`` (:mod:`tornchat.storage`); this
relay, one per worker process, reads pending rows in batches, produces them
with an idempotent ``acks=all`` producer and marks a row sent only after its
delivery report says the broker has it (:mod:`tornchat.events.outbox`,
:mod:`tornchat.events.kafka`). Delivery is at least once: a crash between the
broker's acknowledgement and the ``UPDATE`` re-sends the row, with the same
``dedupeId``. A lost database connection in that window does not: the relay
remembers the acknowledged ids and records them before its next claim.

While no broker answers, the relay stops claiming rows, probes with capped
exponential backoff (:class:`tornchat.backoff.Backoff`, exact delays: no
jitter) and reports ``down`` on ``/health`` (which stays 200);
the backlog waits in the outbox and drains oldest first when a broker is
back. On shutdown :meth:`OutboxRelay.stop` keeps publishing until the backlog
is empty or the budget is spent; whatever is left stays for the next start.

Thread rule: one dedicated thread (``tornchat-relay``) owns the producer, the
relay's own database connection and every blocking call; the IOLoop only
starts it, asks for ``health()`` (a flag read) and stops it. The relay never
calls into the IOLoop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from datetime import timedelta

import peewee as pw
from prometheus_client import CollectorRegistry, Counter, Gauge

from tornchat.backoff import Backoff
from tornchat.config import Settings
from tornchat.events.kafka import EventPublisher
from tornchat.events.outbox import Backlog, OutboxRow, OutboxStore, SingleRelayLock
from tornchat.storage.database import open_database

log = logging.getLogger(__name__)

_PROBE_TIMEOUT = 1.0
_BACKOFF_MIN, _BACKOFF_MAX = 0.25, 5.0
#: a database outage is retried at least every second: the relay must be back
#: within 2 s of PostgreSQL (the broker's longer cap spares a broker that is down)
_DATABASE_BACKOFF_MAX = 1.0
_STANDBY_RETRY = 2.0
_HOUSEKEEPING_INTERVAL = 5.0
_PRUNE_INTERVAL = 300.0
#: time kept at the end of a shutdown budget to record acknowledged rows
_MARK_MARGIN = 0.25
_START_WAIT = 1.0


class RelayMetrics:
    """The relay's Prometheus metrics, in ``registry`` (None: not exported)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.published = Counter(
            "tornchat_events_published", "MessageSent events acknowledged by Kafka",
            registry=registry)
        self.failures = Counter(
            "tornchat_event_publish_failures", "Event publish attempts that Kafka did not "
            "acknowledge (the event stays in the outbox and is retried)", registry=registry)
        self.backlog = Gauge(
            "tornchat_outbox_backlog", "Events committed but not yet acknowledged by Kafka",
            registry=registry, multiprocess_mode="livemax")
        self.oldest_age = Gauge(
            "tornchat_outbox_oldest_age_seconds", "Age of the oldest unpublished event",
            registry=registry, multiprocess_mode="livemax")

    def observe_backlog(self, backlog: Backlog) -> None:
        self.backlog.set(backlog.size)
        self.oldest_age.set(backlog.oldest_age)


class OutboxRelay:
    """Implements :class:`tornchat.server.app.EventRelay` over a dedicated thread."""

    def __init__(self, outbox: OutboxStore, publisher: EventPublisher, *,
                 batch_size: int = 200, poll_interval: float = 0.1,
                 retention: timedelta = timedelta(hours=24),
                 metrics: RelayMetrics | None = None,
                 lock: SingleRelayLock | None = None) -> None:
        self.outbox = outbox
        self.publisher = publisher
        self.metrics = metrics or RelayMetrics(None)
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._retention = retention
        self._lock = lock or SingleRelayLock(outbox.database)
        self._up = False
        self._probed = threading.Event()
        self._stopping = threading.Event()
        self._deadline = float("inf")
        self._backoff = Backoff(_BACKOFF_MIN, _BACKOFF_MAX, jitter=False)
        self._database_backoff = Backoff(_BACKOFF_MIN, _DATABASE_BACKOFF_MAX, jitter=False)
        self._next_housekeeping = 0.0
        self._next_prune = 0.0
        self._thread: threading.Thread | None = None
        #: events acknowledged by Kafka since this relay was built (relay thread writes)
        self.published = 0

    # -- IOLoop side ----------------------------------------------------------

    async def start(self) -> None:
        """Start the relay thread; waits briefly for the first broker probe."""
        self._thread = threading.Thread(target=self._run, name="tornchat-relay", daemon=True)
        self._thread.start()
        loop = asyncio.get_running_loop()
        end = loop.time() + _START_WAIT
        while not self._probed.is_set() and loop.time() < end:
            await asyncio.sleep(0.01)

    async def stop(self, timeout: float) -> None:
        """Publish what is pending for up to ``timeout`` s; the rest stays in the outbox."""
        self._deadline = time.monotonic() + timeout
        self._stopping.set()
        while self._thread is not None and self._thread.is_alive():
            if time.monotonic() > self._deadline + 0.5:
                log.warning("relay did not stop within its budget; leaving it")
                return
            await asyncio.sleep(0.01)

    async def health(self) -> str:
        alive = self._thread is not None and self._thread.is_alive()
        return "ok" if self._up and alive else "down"

    # -- blocking API (CLI) ---------------------------------------------------

    def drain(self, timeout: float) -> Backlog:
        """Publish the backlog in this thread, then stop; returns what is left."""
        self._deadline = time.monotonic() + timeout
        self._stopping.set()
        self._run(close=False)
        try:
            return self.outbox.backlog()
        finally:
            self.outbox.close()

    # -- relay thread ---------------------------------------------------------

    def _run(self, close: bool = True) -> None:
        log.info("outbox relay started", extra={"topic": self.publisher.topic})
        try:
            while not self._step():
                pass
        finally:
            self._lock.release()
            self.publisher.close()
            self.outbox.flush_unrecorded()
            self._housekeeping(final=True)
            if close:
                self.outbox.close()
            log.info("outbox relay stopped")

    def _step(self) -> bool:
        """One round; True when the relay should exit."""
        stopping = self._stopping.is_set()
        if stopping and time.monotonic() >= self._deadline:
            return True
        try:
            if time.monotonic() >= self._next_housekeeping:
                self._housekeeping()
            if not self._up and not self._probe():
                return stopping or self._sleep_backoff()
            if not self._lock.try_acquire():
                return stopping or self._sleep(_STANDBY_RETRY)
            claimed, acked = self.outbox.relay_batch(self._batch_size, self._publish)
        except (pw.OperationalError, pw.InterfaceError) as exc:
            log.warning("outbox database unavailable", extra={"error": str(exc)})
            return stopping or self._sleep(self._database_backoff.next())
        except Exception:
            log.exception("outbox relay round failed")
            return stopping or self._sleep_backoff()
        if claimed:
            self.published += acked
            self.metrics.published.inc(acked)
        if acked < claimed:
            self.metrics.failures.inc(claimed - acked)
            self._set_up(False)
            return stopping or self._sleep_backoff()
        self._backoff.reset()
        self._database_backoff.reset()
        if claimed and (self.outbox.more_pending or stopping):
            return False  # a backlog, or a shutdown drain: the next batch at once
        if claimed:
            # Caught up: let the next events gather instead of spinning rounds
            # of a few rows each (a round costs three queries and a broker
            # round trip however few rows it carries).
            return self._sleep(self._poll_interval)
        if stopping:
            return True
        self.publisher.service()
        if self.publisher.broker_down:
            self.publisher.reset()
            self._set_up(False)
            return False
        return self._sleep(self._poll_interval)

    def _publish(self, rows: Sequence[OutboxRow]) -> set[int]:
        return self.publisher.publish(rows, self._give_up)

    def _give_up(self) -> bool:
        return self._stopping.is_set() and time.monotonic() >= self._deadline - _MARK_MARGIN

    def _probe(self) -> bool:
        up = self.publisher.probe(_PROBE_TIMEOUT)
        self._set_up(up)
        self._probed.set()
        return up

    def _set_up(self, up: bool) -> None:
        if up != self._up:
            if up:
                log.info("kafka reachable; publishing the outbox")
            else:
                log.warning("kafka unreachable; events wait in the outbox")
        self._up = up

    def _sleep(self, seconds: float) -> bool:
        self._stopping.wait(seconds)
        return False

    def _sleep_backoff(self) -> bool:
        return self._sleep(self._backoff.next())

    def _housekeeping(self, final: bool = False) -> None:
        """Refresh the backlog gauges; prune old sent rows now and then."""
        now = time.monotonic()
        self._next_housekeeping = now + _HOUSEKEEPING_INTERVAL
        try:
            if not final and now >= self._next_prune:
                self._next_prune = now + _PRUNE_INTERVAL
                pruned = self.outbox.prune(self._retention)
                if pruned:
                    log.info("pruned sent outbox rows", extra={"rows": pruned})
            self.metrics.observe_backlog(self.outbox.backlog())
        except (pw.OperationalError, pw.InterfaceError) as exc:
            log.warning("outbox housekeeping failed", extra={"error": str(exc)})


def build_relay(settings: Settings, registry: CollectorRegistry | None = None
                ) -> OutboxRelay | None:
    """The relay for ``settings``, or None when ``KAFKA_BROKER`` is unset.

    It opens its own small database pool (two connections), so publishing
    never competes with chat requests for the store's connections.
    """
    if not settings.kafka_broker:
        return None
    database = open_database(settings.database_url, 2)
    return OutboxRelay(
        OutboxStore(database),
        EventPublisher(settings.kafka_broker, settings.kafka_topic,
                       settings.kafka_publish_timeout),
        batch_size=settings.outbox_batch_size,
        poll_interval=settings.outbox_poll_interval,
        retention=timedelta(hours=settings.outbox_retention_hours),
        metrics=RelayMetrics(registry),
        lock=SingleRelayLock(database),
    )
