"""Prometheus metrics of one worker, served as text on ``GET /metrics``
(:class:`tornchat.server.http.MetricsHandler`).

:class:`Metrics` owns every metric object, in a registry of its own, and the
application owns the ``Metrics`` (no module-level metric globals, so several
applications can live in one test process).

Forked workers: with ``--processes`` > 1 the supervisor calls
:func:`prepare_multiprocess` in the parent before forking. Every worker then
writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` and whichever
worker answers ``/metrics`` aggregates all of them (prometheus-client's
multiprocess mode): counters and histograms are summed over workers, dead
ones included; the connection gauge counts live workers only
(``livesum``; the supervisor calls :func:`mark_worker_dead`).

Each update of a multiprocess value first asks whether the process forked
since (prometheus-client compares ``os.getpid()`` with the pid it wrote
under). On this machine's virtual CPUs that system call made the check 6%
of a worker's samples at 1,000 msg/s x 10 with two workers (py-spy,
``--gil``; docs/performance.md). :class:`ProcessId` answers the same
question from a pid cached per process, refreshed in every child by an
at-fork hook, through ``MultiProcessValue``'s ``process_identifier``
parameter (prometheus-client 0.20+; its one rule: distinct values in
processes that run at the same time, which real pids are).

Thread rule: metric updates are thread-safe (the bus listener thread counts
received pub/sub messages); the handler runs on the IOLoop.
"""

from __future__ import annotations

import glob
import os
import tempfile

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


#: the stages of a message's path that ``TORNCHAT_STAGE_TIMING`` times, in order
STAGES = (
    "queue",      # submitted to the group-commit writer -> its batch starts
    "database",   # the batch's statement and commit
    "handoff",    # committed (writer thread) -> the IOLoop resumes the send
    "publish",    # handed to the bus -> its publisher takes it for Redis (the bus queue)
    "redis",      # taken for Redis -> the receiving worker's listener thread has it
    "handover",   # listener thread -> the receiving IOLoop
    "order",      # held by the sequencer for a lower seq (only messages that were held)
    "write",      # frames written to the local sockets
)
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064,
                 0.128, 0.256, 0.512, 1.0)


class StageTimes:
    """Per-stage latency of the send path (``tornchat_stage_seconds{stage}``),
    for finding where a message waits (docs/performance.md). Off by default:
    on, it costs a histogram update per stage and message."""

    def __init__(self, enabled: bool, registry: CollectorRegistry) -> None:
        self.enabled = enabled
        self._of: dict[str, Histogram] = {}
        if enabled:  # off, /metrics does not carry the empty series
            stage = Histogram(
                "tornchat_stage_seconds", "Seconds a message spends in each stage of its path "
                "(TORNCHAT_STAGE_TIMING=1)", ["stage"], buckets=STAGE_BUCKETS,
                registry=registry)
            self._of = {name: stage.labels(stage=name) for name in STAGES}

    def observe(self, stage: str, seconds: float) -> None:
        if self.enabled:
            self._of[stage].observe(max(0.0, seconds))


class Metrics:
    """Every metric tornchat exports."""

    CONTENT_TYPE = CONTENT_TYPE_LATEST

    def __init__(self, stage_timing: bool = False) -> None:
        self.multiprocess = MULTIPROC_ENV in os.environ
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "tornchat_connections", "Live authenticated WebSocket connections",
            registry=r, multiprocess_mode="livesum")
        self.messages_sent = Counter(
            "tornchat_messages_sent", "Messages stored and acknowledged with message_sent",
            registry=r)
        self.messages_delivered = Counter(
            "tornchat_messages_delivered", "new_message frames written to receivers' sockets",
            registry=r)
        pubsub = Counter(
            "tornchat_redis_pubsub_messages", "Redis pub/sub messages published (out) and "
            "received from other workers (in) by the bus, health probes excluded",
            ["direction"], registry=r)
        self.pubsub_out = pubsub.labels("out")
        self.pubsub_in = pubsub.labels("in")
        self.bus_reconnects = Counter(
            "tornchat_bus_reconnects", "Times the bus subscriber re-subscribed after losing "
            "Redis", registry=r)
        self.bus_up = Gauge(
            "tornchat_bus_up", "1 while the bus subscriber is connected (minimum over "
            "workers)", registry=r, multiprocess_mode="livemin")
        self.refused_pending = Counter(
            "tornchat_connections_refused_pending", "WebSocket upgrades refused with 503 "
            "because TORNCHAT_MAX_PENDING_CONNECTIONS connections had not authenticated yet",
            registry=r)
        self.accept_pauses = Counter(
            "tornchat_accept_pauses", "Times a worker stopped accepting TCP connections "
            "because TORNCHAT_MAX_PENDING_CONNECTIONS had not authenticated yet", registry=r)
        self.slow_consumers = Counter(
            "tornchat_slow_consumers_closed", "Connections closed with 4008 because they "
            "did not read their frames (TORNCHAT_MAX_OUTBOUND_BYTES)", registry=r)
        self.delivery_latency = Histogram(
            "tornchat_delivery_latency_seconds", "From publishing a message to writing it to "
            "local receivers' sockets (send-to-deliver)", buckets=LATENCY_BUCKETS, registry=r)
        self.stages = StageTimes(stage_timing, r)

    def render(self) -> bytes:
        """The exposition text: this process, or every worker in multiprocess mode."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)


class ProcessId:
    """``os.getpid()`` without the system call: the pid, read once per
    process (here, and again in each forked child)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.pid = os.getpid()

    def __call__(self) -> int:
        return self.pid


def prepare_multiprocess() -> str | None:
    """In the supervisor, before forking: give the workers a clean metrics directory.

    Uses ``PROMETHEUS_MULTIPROC_DIR`` if set (its stale ``*.db`` files from a
    previous run are removed), else a fresh temporary directory, which is
    returned so the supervisor can delete it on exit.
    """
    created = None
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        created = tempfile.mkdtemp(prefix="tornchat-metrics-")
        os.environ[MULTIPROC_ENV] = created
    # prometheus-client picks its value class when it is first imported, which
    # happened before this point; no metric exists yet, so choosing again makes
    # every metric the workers create file-backed.
    values.ValueClass = values.MultiProcessValue(process_identifier=ProcessId())
    return created


def mark_worker_dead(pid: int) -> None:
    """In the supervisor, when a worker exits: drop its live-gauge files."""
    if MULTIPROC_ENV in os.environ:
        multiprocess.mark_process_dead(pid)
