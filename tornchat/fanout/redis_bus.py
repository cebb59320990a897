"""The Redis pub/sub bus: fan-out between worker processes and instances.

Four Redis clients per worker, all created after the fork (``start``): an
asyncio publisher on the IOLoop (one connection, commands in order), a probe
client for health round trips and peer checks (so a slow publish never
delays ``/health``), a blocking subscriber in a dedicated thread
(:mod:`tornchat.fanout.redis_listener`), and the shared-state client of
:class:`~tornchat.fanout.redis_slots.RedisSlots`. Channel names, the envelope
and the Lua scripts are :mod:`tornchat.fanout.redis_wire`.

Modes. ``pattern`` (default, the seed's scheme): a delivery is published to
``chat:{conversationId}`` and every worker subscribes to ``chat:*``, so every
worker receives every message and drops those with no local receiver.
``routed``: a Lua script looks up which workers hold the recipients'
connections (the connection-slot sets) and publishes once to each worker's
own channel ``chat-worker:{workerId}``; a worker receives only what it
delivers, for one extra Redis-side lookup per message. docs/scaling.md
measures both. In both modes each worker also listens on its own channel,
where deliveries addressed to it (``Delivery.to_workers``: presence changes)
arrive. On one Redis, in either mode, a worker alone publishes nothing
(:mod:`tornchat.fanout.redis_peers` finds its peers).

The publishing worker delivers to its own connections at once
(``call_soon``) and ignores its own echo, so local delivery needs no Redis
round trip and survives a Redis outage.

On a Redis Cluster (``redis+cluster://``) the bus runs routed mode over
sharded pub/sub: each worker SSUBSCRIBEs to its own hash-tagged channels on
the one shard that owns them, and a batch is published in two cluster
pipelines: the recipients' slot sets are read with ZRANGE (which workers
hold them), then one SPUBLISH per such worker goes out, in order per shard
connection and so per worker channel.

Publishing never makes a sender wait for Redis: ``publish`` queues the
delivery and one task per worker publishes the queue in order, a batch at a
time (pattern mode: one ``PUBLISH_MANY`` script call per batch). Stored
messages skip that queue while the bus is healthy: the group-commit writer's
thread publishes each committed batch itself (``publish_committed``) over a
lean blocking connection of its own (:mod:`tornchat.fanout.redis_direct`),
so a message bound for another worker leaves without waiting for this
worker's busy IOLoop twice (docs/performance.md measures it). A failure
there, an outage or a Redis Cluster sends them through the queue instead,
which then owns order and retries until it has drained. While Redis is down
the queue (``TORNCHAT_BUS_BACKLOG`` deliveries, oldest dropped first) is kept
and published once this worker's subscriber is back and the workers it knew
have resubscribed (or a bounded wait passed); typing signals are dropped
(they are stale a second later).
Pub/sub is at-most-once: a worker still resubscribing misses what is
published meanwhile; the message itself is safe in the database. An
envelope of a newer version (a rolling upgrade) is dropped, logged once per
version.

Health proves the path end to end: a nonce is published to this worker's
probe channel and must come back through the subscriber thread.

Thread rule: everything here runs on the IOLoop thread except the listener,
which hands batches and state changes over with ``IOLoop.add_callback``, and
``publish_committed``, which runs on the writer's thread, owns the blocking
connection and reaches the queue only through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

from tornado.ioloop import IOLoop

from tornchat.backoff import CAP, Backoff
from tornchat.fanout.bus import MESSAGE, TYPING, Bus, DeliverCallback, Delivery
from tornchat.fanout.redis_direct import DirectConnection
from tornchat.fanout.redis_direct import supports as supports_direct
from tornchat.fanout.redis_keys import layout_for
from tornchat.fanout.redis_listener import Listener
from tornchat.fanout.redis_peers import PeerWatch
from tornchat.fanout.redis_wire import (
    ACK_PREFIX,
    CHANNEL_PREFIX,
    ENVELOPE_VERSION,
    HELLO_CHANNEL,
    HELLO_CHANNEL_BYTES,
    PATTERN,
    PUBLISH_MANY,
    REDIS_ERRORS,
    ROUTED_PUBLISH,
    WORKER_CHANNEL_PREFIX,
    UnknownVersion,
    decode,
    encode,
    is_cluster_url,
    origin_of,
    probe_channel,
    redis_client,
    worker_channel,
)
from tornchat.metrics import Metrics

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

log = logging.getLogger(__name__)

PATTERN_MODE, ROUTED_MODE = "pattern", "routed"
_START_WAIT = 3.0  # seconds start() waits for the first subscription before going on degraded
_PROBE_TIMEOUT = 1.0
_BATCH = 256  # deliveries per pipelined publish
_STOP_FLUSH = 1.0  # seconds stop() gives the queue to go out
_PROBE_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, TimeoutError)
#: socket timeout of the writer thread's client: a hung Redis holds the next
#: batch's commit this long once, then the queue takes over
_DIRECT_TIMEOUT = 0.5


def new_worker_id() -> str:
    """Unique per worker process and start: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisBus(Bus):
    def __init__(self, url: str, worker_id: str, metrics: Metrics, *,
                 mode: str = PATTERN_MODE, probe_interval: float = 5.0,
                 backlog: int = 10000, timeout: float = 2.0) -> None:
        self.worker_id = worker_id
        self.cluster = is_cluster_url(url)
        if self.cluster and mode != ROUTED_MODE:
            raise ValueError("a Redis Cluster carries routed mode only")
        self.mode = mode
        self._keys = layout_for(url)
        self._url = url
        self._metrics = metrics
        self._probe_interval = probe_interval
        self._timeout = timeout
        self._origin = origin_of(worker_id)
        self._probe_channel = probe_channel(worker_id, self.cluster)
        self._probe_channel_bytes = self._probe_channel.encode()
        # the publisher's commands go one at a time over one connection; the
        # health probe has its own client, so a slow publish never delays /health
        self._redis = redis_client(url, timeout, single_connection=True)
        self._probe_redis = redis_client(url, timeout, pool_size=2)
        self._routed = self._redis.register_script(ROUTED_PUBLISH)
        self._publish_many = self._redis.register_script(PUBLISH_MANY)
        self._deliver: DeliverCallback | None = None
        self._listener: Listener | None = None
        self._up = False
        self._became_up = asyncio.Event()
        self._down_since: float | None = None
        self._probes: dict[bytes, asyncio.Future[None]] = {}
        self._outbox: collections.deque[Delivery] = collections.deque(maxlen=backlog)
        self._wakeup = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._failing = False
        self._closing = False
        self._unknown_versions: set[int] = set()  # logged already
        self._peers = PeerWatch(self._probe_redis, worker_id, interval=probe_interval,
                                timeout=timeout)
        self._loop: asyncio.AbstractEventLoop | None = None
        # the writer threads' own connections (single Redis only), one per thread
        self._direct_enabled = not self.cluster and supports_direct(url)
        self._direct_local = threading.local()
        self._directs: list[DirectConnection] = []
        self._direct_open = True  # cleared on a failure or an outage, set once the queue drained
        # batches a writer thread handed to the queue that the IOLoop has not queued yet
        self._handing = 0
        self._handing_lock = threading.Lock()
        self._resubscribed: list[Callable[[], None]] = []
        self._lost: list[Callable[[], None]] = []
        #: True while this worker has been without Redis (a degraded start
        #: included): the next subscription runs the ``on_resubscribed`` callbacks
        self._missed_redis = False
        #: subscriptions lost while deliveries were queued or a batch was out: the
        #: publish loop waits out each, even one that ended before it looked. One
        #: lost while the queue was idle holds nothing back (a slot move on a
        #: cluster would otherwise stall the next publish by a backoff cap)
        self._outages = 0
        self._sending = False

    # -- Bus interface -----------------------------------------------------

    async def start(self, deliver: DeliverCallback) -> None:
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()
        # the worker's own channel in both modes: presence changes come on it
        channels = [self._probe_channel, worker_channel(self.worker_id, self.cluster)]
        patterns: list[str] = []
        if self.mode == PATTERN_MODE:
            patterns.append(PATTERN)
        if not self.cluster:  # the peer watch (a cluster lists no sharded channels)
            channels.append(HELLO_CHANNEL)
        self._listener = Listener(self._url, channels, patterns, IOLoop.current(),
                                  on_batch=self._on_batch, on_state=self._on_state,
                                  ping_interval=self._probe_interval, timeout=self._timeout,
                                  ignore_prefix=self._origin.encode(), sharded=self.cluster)
        self._listener.start()
        if not self.cluster:
            self._peers.start()
        try:
            await asyncio.wait_for(self._became_up.wait(), _START_WAIT)
        except TimeoutError:
            # what this worker keeps in Redis meanwhile is only counted locally
            self._missed_redis = True
            log.warning("Redis bus not subscribed yet; starting degraded (/health says down) "
                        "and retrying in the background", extra={"mode": self.mode})
            return
        if not self.cluster:
            await self._peers.announced()

    def publish_nowait(self, delivery: Delivery) -> None:
        """Deliver locally now; queue for the other workers (if there are any).
        Never waits for Redis. A delivery with ``to_workers`` goes to those only."""
        addressed = delivery.to_workers
        if addressed is None or self.worker_id in addressed:
            self.deliver_local(delivery)
        if addressed is not None:
            if not any(worker != self.worker_id for worker in addressed):
                return
        elif self._peers.alone:
            return
        self._enqueue(delivery)

    def deliver_local(self, delivery: Delivery) -> None:
        if self._deliver is not None:
            asyncio.get_running_loop().call_soon(self._deliver, delivery)

    def publish_committed(self, deliveries: Sequence[Delivery]) -> None:
        """Writer thread: straight to Redis while the bus is up and nothing waits
        in the queue after a failure; otherwise into the queue, via the IOLoop."""
        if self._closing or self._peers.alone or not deliveries or self._loop is None:
            return
        # decided under the lock the IOLoop reopens the road with: a batch that
        # finds it closed is counted as on its way to the queue before the
        # loop can reopen it, so the next batch cannot go direct and overtake it
        with self._handing_lock:
            direct = (self._direct_enabled and self._direct_open and self._up
                      and not self._failing)
            if not direct:
                self._handing += 1
        if direct:
            try:
                self._send_direct(deliveries)
                return
            except Exception as exc:  # keep them: the queue retries, in order
                with self._handing_lock:
                    self._direct_open = False
                    self._handing += 1
                if not isinstance(exc, REDIS_ERRORS):
                    log.exception("publishing from the writer failed unexpectedly")
                else:
                    log.warning("Redis publish from the writer failed; the publish queue "
                                "takes over until it has drained: %s", exc)
        try:
            self._loop.call_soon_threadsafe(self._enqueue_handed, deliveries)
        except RuntimeError:  # the loop is closed: shutting down
            with self._handing_lock:
                self._handing -= 1

    def _direct_connection(self) -> DirectConnection:
        """The calling writer thread's own connection (made on its first use)."""
        connection: DirectConnection | None = getattr(self._direct_local, "connection", None)
        if connection is None:
            connection = DirectConnection(self._url, _DIRECT_TIMEOUT)
            self._direct_local.connection = connection
            self._directs.append(connection)
        return connection

    def _send_direct(self, batch: Sequence[Delivery]) -> None:
        """The writer thread's publish: one script call (pattern) or one per
        delivery (routed), all in one write on the thread's own connection."""
        sent_at = time.time() if self._metrics.stages.enabled else None
        if self.mode == ROUTED_MODE:
            commands = []
            for delivery in batch:
                keys, args = self._routed_call(delivery, sent_at)
                commands.append(("EVAL", ROUTED_PUBLISH, str(len(keys)), *keys, *args))
        else:
            commands = [("EVAL", PUBLISH_MANY, "0", *self._pattern_args(batch, sent_at))]
        self._direct_connection().execute(commands)
        self._sent(batch, sent_at)

    def _enqueue_handed(self, deliveries: Sequence[Delivery]) -> None:
        """A writer thread's batch, into the queue behind what is there (IOLoop)."""
        with self._handing_lock:
            self._handing -= 1
        for delivery in deliveries:
            self._enqueue(delivery)

    def _enqueue(self, delivery: Delivery) -> None:
        """Into the publish queue (IOLoop thread), the publish task started if needed."""
        if len(self._outbox) == self._outbox.maxlen:
            log.error("bus outbox full; dropping the oldest delivery",
                      extra={"conversationId": self._outbox[0].conversation_id})
        self._outbox.append(delivery)
        self._wakeup.set()
        if self._publisher is None:
            self._publisher = asyncio.create_task(self._publish_loop())

    def on_lost(self, callback: Callable[[], None]) -> None:
        self._lost.append(callback)

    def on_resubscribed(self, callback: Callable[[], None]) -> None:
        self._resubscribed.append(callback)

    async def stop(self) -> None:
        self._closing = True  # the writer threads publish nothing more either
        self._peers.stop()
        if self._publisher is not None:
            self._wakeup.set()
            try:  # a last chance for what is queued, bounded
                await asyncio.wait_for(asyncio.shield(self._publisher), _STOP_FLUSH)
            except TimeoutError:
                self._publisher.cancel()
        if self._outbox:
            log.warning("stopping with deliveries not published to other workers",
                        extra={"deliveries": len(self._outbox)})
        if self._listener is not None:
            self._listener.stop()
            await asyncio.to_thread(self._listener.join, self._timeout + 1.0)
        await self._redis.aclose()
        await self._probe_redis.aclose()
        for connection in self._directs:
            connection.close()

    async def health(self) -> str:
        """``ok`` only if a probe published now comes back through the subscriber."""
        if not self._up:
            return "down"
        return "ok" if await self._round_trip() else "down"

    # -- publishing --------------------------------------------------------

    async def _publish_loop(self) -> None:
        """The one task that publishes, in order, in pipelined batches.

        Whatever queued while a batch was in flight goes in the next one. A
        failed batch goes back to the front of the queue (typing signals are
        dropped instead). While this worker's subscriber is down nothing is
        published: Redis is presumed down or partitioned, so are the peers'
        subscribers, and a publish landing while they resubscribe would be
        lost. After the reconnect it waits until every worker it knew is
        subscribed again (bounded by one backoff cap plus the connect timeout,
        the latest a live peer retrying on the same backoff is back; on a
        Redis Cluster, which lists no sharded channels, one backoff cap). A
        fixed wait of one cap lost the kept deliveries to a peer whose retry
        fell just after this worker's. In routed mode what was kept then goes
        to each of those workers (:meth:`_keep_after_outage`).
        """
        backoff = Backoff()
        handled = self._outages
        while self._outbox or not self._closing:
            if not self._outbox:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # down, or down and back while a batch was out: peers are likely
            # resubscribing too, and publishing now loses
            if not self._up or self._outages != handled:
                if self._closing:
                    return
                await self._became_up.wait()
                handled = self._outages
                peers: frozenset[str] = frozenset()
                if self.cluster:
                    await asyncio.sleep(CAP)
                else:  # the peers' probe channels say when
                    peers = await self._peers.returned(CAP + self._timeout)
                self._keep_after_outage(peers if self.mode == ROUTED_MODE else frozenset())
                continue
            batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), _BATCH))]
            self._sending = True
            try:
                sent = await self._send(batch)
            finally:
                self._sending = False
            if sent:
                backoff.reset()
                with self._handing_lock:
                    if not self._outbox and not self._handing:
                        self._direct_open = True  # drained: the writers may publish again
                continue
            self._outbox.extendleft(reversed([d for d in batch if d.kind != TYPING]))
            if self._closing:
                return
            await asyncio.sleep(backoff.next())

    def _keep_after_outage(self, peers: frozenset[str]) -> None:
        """What was kept through an outage, made ready to go out: typing
        signals dropped (they are stale), and with ``peers`` (routed mode on
        one Redis) the rest addressed to each of those workers rather than to
        those the connection slots name. Redis may have restarted empty, and a
        peer's slots are back only once it has written them again after its
        own reconnect; a worker without the recipients drops the delivery, as
        every worker does in pattern mode."""
        workers = tuple(sorted(peers))
        kept = [delivery if not workers or delivery.to_workers is not None
                else dataclasses.replace(delivery, to_workers=workers)
                for delivery in self._outbox if delivery.kind != TYPING]
        self._outbox.clear()
        self._outbox.extend(kept)

    async def _send(self, batch: list[Delivery]) -> bool:
        stages = self._metrics.stages
        sent_at = time.time() if stages.enabled else None
        try:
            if self.cluster:
                await self._send_sharded(batch, sent_at)
            elif self.mode == ROUTED_MODE:
                pipe = cast("Pipeline", self._redis.pipeline(transaction=False))
                for delivery in batch:
                    if delivery.to_workers is not None:
                        payload = encode(self._origin, delivery, sent_at)
                        for channel in self._addressed(delivery):
                            pipe.publish(channel, payload)
                        continue
                    keys, args = self._routed_call(delivery, sent_at)
                    await self._routed(keys=keys, args=args, client=pipe)
                await pipe.execute()
            else:
                await self._publish_many(args=self._pattern_args(batch, sent_at))
        except Exception as exc:  # the loop must outlive any failure: keep, retry
            if not isinstance(exc, REDIS_ERRORS):
                log.exception("publishing to Redis failed unexpectedly; keeping deliveries "
                              "to publish again")
            if not self._failing:
                self._failing = True
                log.warning("Redis publish failed; keeping deliveries to publish when it "
                            "returns: %s", exc)
            return False
        if self._failing:
            self._failing = False
            log.info("Redis publish works again; kept deliveries published")
        self._sent(batch, sent_at)
        return True

    def _sent(self, batch: Sequence[Delivery], sent_at: float | None) -> None:
        """Count a published batch (either road); time its publish stage."""
        self._metrics.pubsub_out.inc(len(batch))
        if sent_at is not None:
            stages = self._metrics.stages
            for delivery in batch:
                if delivery.kind == MESSAGE:
                    stages.observe("publish", sent_at - delivery.published_at)

    def _pattern_args(self, batch: Sequence[Delivery], sent_at: float | None) -> list[str]:
        """``PUBLISH_MANY``'s arguments: channel, envelope, channel, envelope, ..."""
        args: list[str] = []
        for delivery in batch:
            payload = encode(self._origin, delivery, sent_at)
            for channel in (self._addressed(delivery) if delivery.to_workers is not None
                            else (CHANNEL_PREFIX + delivery.conversation_id,)):
                args.append(channel)
                args.append(payload)
        return args

    def _routed_call(self, delivery: Delivery,
                     sent_at: float | None) -> tuple[list[str], list[str]]:
        """``ROUTED_PUBLISH``'s keys and arguments for one delivery."""
        return ([self._keys.slot_key(user) for user in delivery.user_ids],
                [WORKER_CHANNEL_PREFIX, encode(self._origin, delivery, sent_at),
                 self.worker_id])

    async def _send_sharded(self, batch: list[Delivery], sent_at: float | None) -> None:
        """Cluster: read every recipient's slot set in one pipeline, then SPUBLISH
        in order in a second one (one round trip per shard each).

        The slot sets are read whole: members whose expiry passed are only
        removed by the next claim or when the key expires, so a worker that died
        may still get a publish nobody reads. Filtering by expiry would need
        Redis's clock (the scores are ``TIME`` of the user's shard), which only a
        script can read, and scripts cannot be pipelined on a cluster."""
        routed = [delivery for delivery in batch if delivery.to_workers is None]
        lookup = self._redis.pipeline(transaction=False)
        for delivery in routed:
            for user in delivery.user_ids:
                lookup.zrange(self._keys.slot_key(user), 0, -1)
        members = iter(await lookup.execute() if routed else ())
        workers_of: dict[int, set[str]] = {}
        for delivery in routed:
            workers = workers_of.setdefault(id(delivery), set())
            for _ in delivery.user_ids:
                for member in next(members):
                    worker = member.partition(b"|")[0].decode()
                    if worker and worker != self.worker_id:
                        workers.add(worker)
        publish = self._redis.pipeline(transaction=False)
        queued = 0
        for delivery in batch:
            channels = (self._addressed(delivery) if delivery.to_workers is not None else
                        [worker_channel(worker, True)
                         for worker in sorted(workers_of.get(id(delivery), ()))])
            payload = encode(self._origin, delivery, sent_at) if channels else ""
            for channel in channels:
                publish.spublish(channel, payload)
                queued += 1
        if queued:
            await publish.execute()

    def _addressed(self, delivery: Delivery) -> list[str]:
        """The own channels of the other workers a delivery is addressed to."""
        return [worker_channel(worker, self.cluster) for worker in delivery.to_workers or ()
                if worker != self.worker_id]

    # -- peers (one Redis) -------------------------------------------------

    @property
    def alone(self) -> bool:
        """True while the last check found no other worker listening."""
        return self._peers.alone

    async def check_peers(self) -> None:
        """Check now whether other workers listen (:meth:`PeerWatch.check`)."""
        await self._peers.check()

    # -- health probe ------------------------------------------------------

    async def _round_trip(self) -> bool:
        nonce = secrets.token_hex(8).encode()
        future = asyncio.get_running_loop().create_future()
        self._probes[nonce] = future
        try:
            if self.cluster:
                await self._probe_redis.spublish(self._probe_channel, nonce)
            else:
                await self._probe_redis.publish(self._probe_channel, nonce)
            await asyncio.wait_for(future, _PROBE_TIMEOUT)
            return True
        except _PROBE_ERRORS:
            return False
        finally:
            self._probes.pop(nonce, None)

    # -- from the listener thread (via add_callback) -----------------------

    def _on_batch(self, batch: Sequence[tuple[bytes, bytes]], read_at: float = 0.0) -> None:
        """``read_at``: when the listener thread read the batch (time.time())."""
        received = 0
        stages = self._metrics.stages if self._metrics.stages.enabled else None
        now = time.time() if stages is not None else 0.0
        for channel, data in batch:
            if channel == HELLO_CHANNEL_BYTES:
                self._peers.heard_hello(data)
                continue
            if channel == self._probe_channel_bytes:
                if data.startswith(ACK_PREFIX):
                    self._peers.heard_ack(data)
                    continue
                future = self._probes.get(data)
                if future is not None and not future.done():
                    future.set_result(None)
                continue
            received += 1
            if self._deliver is None:
                continue
            try:
                delivery = decode(data)
            except UnknownVersion as exc:
                self._drop_unknown_version(exc.version)
                continue
            except (ValueError, TypeError, KeyError):
                log.warning("dropping a malformed bus message",
                            extra={"channel": channel.decode(errors="replace")})
                continue
            if stages is not None and delivery.kind == MESSAGE and delivery.sent_at:
                stages.observe("redis", read_at - delivery.sent_at)
                stages.observe("handover", now - read_at)
            self._deliver(delivery)
        if received:
            self._metrics.pubsub_in.inc(received)

    def _drop_unknown_version(self, version: int) -> None:
        """Log once per version: a newer worker (a rolling upgrade) sends what this
        one cannot read. Its deliveries miss this worker's clients, as in an outage;
        the messages are safe in the database."""
        if version in self._unknown_versions:
            return
        self._unknown_versions.add(version)
        log.warning("dropping bus messages of envelope version %d: this worker reads "
                    "version %d (logged once per version)", version, ENVELOPE_VERSION,
                    extra={"envelopeVersion": version})

    def _on_state(self, up: bool, reason: str) -> None:
        if up == self._up:
            return
        self._up = up
        self._metrics.bus_up.set(1 if up else 0)
        if up:
            if self._down_since is None:
                log.info("Redis bus subscribed", extra={"mode": self.mode,
                                                        "workerId": self.worker_id})
            else:
                self._metrics.bus_reconnects.inc()
                log.warning("Redis bus reconnected and resubscribed", extra={
                    "downSeconds": round(time.monotonic() - self._down_since, 2)})
                self._down_since = None
            self._became_up.set()
            self._peers.subscribed(True)
            if self._missed_redis:
                self._missed_redis = False
                for callback in self._resubscribed:
                    try:
                        callback()
                    except Exception:  # the bus is up whatever a listener does
                        log.exception("a resubscription callback failed")
        else:
            self._direct_open = False  # until the queue, which waits for peers, drained
            if self._outbox or self._sending:
                self._outages += 1
            self._missed_redis = True
            self._peers.subscribed(False)
            self._down_since = time.monotonic()
            self._became_up.clear()
            log.warning("Redis bus down; reconnecting with capped backoff: %s", reason)
            for callback in self._lost:
                try:
                    callback()
                except Exception:
                    log.exception("a bus-lost callback failed")
