"""The subscriber thread of the Redis bus: survives Redis restarts, never dies silently.

redis-py's own ``run_in_thread`` worker ends on the first connection error.
:class:`Listener` instead runs sessions in a loop: connect, subscribe, prove
the subscription with a PING whose PONG arrives after the subscribe
confirmations, then read. Any error ends the session; the thread reports
``down``, waits a capped, jittered exponential backoff
(:class:`tornchat.backoff.Backoff` with its defaults) and starts a new
session (which resubscribes).

Half-open connections: a pub/sub connection only reads, so a peer that
vanished without a FIN is never noticed by reading. The thread PINGs every
``ping_interval`` seconds and ends the session when nothing (not even a PONG)
arrived for two intervals. redis-py's ``health_check_interval`` sends such
PINGs too but never checks the answer, so it is not relied on here.

On one Redis the session reads over the lean connection of
:mod:`tornchat.fanout.redis_direct` (redis-py's pub/sub for URLs it does not
take). On a Redis Cluster (``sharded``) the session SSUBSCRIBEs through redis-py's
cluster client, which connects to the shard that owns each channel's slot.
A slot that moves away ends the subscription with an ``sunsubscribe`` from
the server; that, like a failed node, ends the session, and the next one
reads the slot map anew and subscribes on the new owner.

Thread rule: the thread touches nothing of the application; it hands message
batches and state changes to the IOLoop with ``IOLoop.add_callback``, the one
thread-safe door.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode
from redis.retry import Retry
from tornado.ioloop import IOLoop

from tornchat.backoff import Backoff
from tornchat.fanout.redis_direct import DirectConnection
from tornchat.fanout.redis_direct import supports as supports_direct
from tornchat.fanout.redis_wire import REDIS_ERRORS, node_url

log = logging.getLogger(__name__)

Batch = list[tuple[bytes, bytes]]
#: what the loop is handed: a batch and when the thread read it (time.time())
BatchCallback = Callable[[Batch, float], None]
_POLL = 0.2  # seconds per read; bounds how long stop() waits
_BATCH = 256  # messages handed to the loop per callback
_READY = b"tornchat-ready"


class SubscriberSilent(redis.ConnectionError):
    """No reply to our PINGs: the connection is half-open."""


class SubscriptionLost(redis.ConnectionError):
    """The cluster moved a subscribed channel's slot to another shard."""


_DELIVERED = ("message", "pmessage", "smessage")


class Listener(threading.Thread):
    def __init__(self, url: str, channels: Sequence[str], patterns: Sequence[str],
                 loop: IOLoop, *, on_batch: BatchCallback,
                 on_state: Callable[[bool, str], None], ping_interval: float,
                 timeout: float, ignore_prefix: bytes = b"\x00", sharded: bool = False) -> None:
        """``ignore_prefix``: messages whose data starts with it never reach the loop
        (the bus passes its own origin, so a worker's echoes cost it no loop time)."""
        super().__init__(name="tornchat-redis-listener", daemon=True)
        self._url = url
        self._channels = list(channels)
        self._patterns = list(patterns)
        self._loop = loop
        self._on_batch = on_batch
        self._on_state = on_state
        self._ping_interval = ping_interval
        self._timeout = timeout
        self._ignore_prefix = ignore_prefix
        self._sharded = sharded
        #: the cluster nodes the last session knew: the next one starts from them,
        #: so a failover of the node REDIS_URL names does not strand the worker
        self._known_nodes: list[ClusterNode] = []
        self._stopping = threading.Event()
        self._backoff = Backoff()

    def stop(self) -> None:
        """Ask the thread to end; it does within one poll interval."""
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._session()
            except Exception as exc:  # redis errors expected; anything else must not kill us
                if self._stopping.is_set():
                    break
                if not isinstance(exc, (*REDIS_ERRORS, OSError)):
                    log.exception("unexpected error in the Redis listener")
                self._loop.add_callback(self._on_state, False, f"{type(exc).__name__}: {exc}")
                delay = self._backoff.next()
                log.info("Redis subscriber reconnecting", extra={"delaySeconds": round(delay, 2),
                                                                  "error": str(exc)})
                self._stopping.wait(delay)

    def _session(self) -> None:
        if not self._sharded and supports_direct(self._url):
            self._direct_session()
            return
        options: dict[str, Any] = {
            "socket_timeout": self._timeout, "socket_connect_timeout": self._timeout,
            "socket_keepalive": True, "retry": Retry(NoBackoff(), 0)}
        client: redis.Redis | redis.RedisCluster
        pubsub: Any
        if self._sharded:
            client = (redis.RedisCluster(startup_nodes=self._known_nodes, **options)
                      if self._known_nodes else
                      redis.RedisCluster.from_url(node_url(self._url), **options))
            self._known_nodes = [ClusterNode(node.host, node.port)
                                 for node in client.get_nodes()] or self._known_nodes
            pubsub = client.pubsub()
        else:
            client = redis.Redis.from_url(self._url, **options)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            if self._sharded:
                pubsub.ssubscribe(*self._channels)
                self._await_sharded(pubsub)
            else:
                if self._patterns:
                    pubsub.psubscribe(*self._patterns)
                pubsub.subscribe(*self._channels)
                pubsub.ping(_READY)
                self._await_ready(pubsub)
            self._backoff.reset()
            self._loop.add_callback(self._on_state, True, "subscribed")
            self._listen(lambda wait, batch: self._read_pubsub(pubsub, wait, batch),
                         lambda: self._ping(pubsub))
        finally:
            try:
                pubsub.close()
                client.close()
            except Exception:  # closing a broken connection may fail; nothing to do
                log.debug("error closing the Redis subscriber", exc_info=True)

    def _direct_session(self) -> None:
        """One Redis, over the lean connection of :mod:`tornchat.fanout.redis_direct`:
        redis-py's pub/sub parsing made this thread 13-15 % of each worker's
        samples at 1,000 msg/s to groups of 10, the lean reading 7-10 %."""
        connection = DirectConnection(self._url, self._timeout)
        try:
            commands: list[tuple[str, ...]] = []
            if self._patterns:
                commands.append(("PSUBSCRIBE", *self._patterns))
            commands.append(("SUBSCRIBE", *self._channels))
            commands.append(("PING", _READY.decode()))
            connection.send(commands)
            after_ready = self._await_pong(connection)
            self._backoff.reset()
            self._loop.add_callback(self._on_state, True, "subscribed")
            early: Batch = []  # what came in the same read as the PONG
            self._messages_of(after_ready, early)
            self._hand_over(early)
            self._listen(
                lambda wait, batch: self._messages_of(connection.replies(wait), batch),
                lambda: connection.send([("PING",)]))
        finally:
            connection.close()

    def _await_pong(self, connection: DirectConnection) -> list[Any]:
        """Read until the PONG that follows the subscribe confirmations; returns
        the replies read after it (messages published since)."""
        deadline = time.monotonic() + self._timeout
        while True:
            replies = connection.replies(_POLL)
            for index, reply in enumerate(replies):
                if reply[:2] == [b"pong", _READY]:
                    return replies[index + 1:]
            if time.monotonic() > deadline:
                raise redis.TimeoutError("subscription not confirmed in time")

    def _messages_of(self, replies: list[Any], batch: Batch) -> bool:
        """The deliverable messages among a subscribed connection's replies,
        into ``batch``; True if anything (a PONG included) arrived."""
        prefix = self._ignore_prefix
        for reply in replies:
            kind = reply[0]
            if kind == b"message":
                channel, data = reply[1], reply[2]
            elif kind == b"pmessage":
                channel, data = reply[2], reply[3]
            else:  # subscribe confirmations, pongs
                continue
            if not data.startswith(prefix):
                batch.append((channel, data))
        return bool(replies)

    def _await_ready(self, pubsub: redis.client.PubSub) -> None:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=_POLL)
            if message is not None and message["type"] == "pong" and message["data"] == _READY:
                return
        raise redis.TimeoutError("subscription not confirmed in time")

    def _await_sharded(self, pubsub: Any) -> None:
        """Until every SSUBSCRIBE is confirmed (the cluster's pub/sub has no PING
        of its own: each shard connection is pinged in :meth:`_ping`)."""
        confirmed: set[bytes] = set()
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline and len(confirmed) < len(self._channels):
            message = pubsub.get_sharded_message(timeout=_POLL)
            if message is not None and message["type"] == "ssubscribe":
                confirmed.add(message["channel"])
        if len(confirmed) < len(self._channels):
            raise redis.TimeoutError("sharded subscription not confirmed in time")

    def _next(self, pubsub: Any, timeout: float) -> dict[str, Any] | None:
        if not self._sharded:
            message: dict[str, Any] | None = pubsub.get_message(timeout=timeout)
            return message
        message = pubsub.get_sharded_message(timeout=timeout)
        if message is not None and message["type"] == "sunsubscribe":
            raise SubscriptionLost(f"slot of {message['channel']!r} moved")
        if message is not None and message["type"] == "ssubscribe":
            return {"type": "subscribe"}
        return message

    def _ping(self, pubsub: Any) -> None:
        if not self._sharded:
            pubsub.ping()
            return
        for shard in list(pubsub.node_pubsub_mapping.values()):
            shard.ping()

    def _read_pubsub(self, pubsub: Any, wait: float, batch: Batch) -> bool:
        """What redis-py's pub/sub has within ``wait`` s, into ``batch``; True if
        anything (a PONG included) arrived."""
        message = self._next(pubsub, wait)
        if message is None:
            return False
        while message is not None:
            if (message["type"] in _DELIVERED
                    and not message["data"].startswith(self._ignore_prefix)):
                batch.append((message["channel"], message["data"]))
            if len(batch) >= _BATCH:
                break
            message = self._next(pubsub, 0.0)
        return True

    def _hand_over(self, batch: Batch) -> None:
        """To the IOLoop, at most ``_BATCH`` messages per callback."""
        for start in range(0, len(batch), _BATCH):
            self._loop.add_callback(self._on_batch, batch[start:start + _BATCH], time.time())

    def _listen(self, read: Callable[[float, Batch], bool], ping: Callable[[], None]) -> None:
        """Read until stopped or failed, handing batches to the loop; PING every
        interval, and end the session when two intervals passed in silence."""
        interval = self._ping_interval
        last_heard = time.monotonic()
        next_ping = last_heard + interval
        while not self._stopping.is_set():
            batch: Batch = []
            try:
                heard = read(_POLL, batch)
            finally:  # what was read before a failure is delivered, not dropped
                self._hand_over(batch)
            now = time.monotonic()
            if heard:
                last_heard = now
            if now >= next_ping:
                if now - last_heard > 2 * interval:
                    raise SubscriberSilent(f"no reply from Redis for {now - last_heard:.1f}s")
                ping()
                next_ping = now + interval
