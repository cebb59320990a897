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

Thread rule: the thread touches nothing of the application; it hands message
batches and state changes to the IOLoop with ``IOLoop.add_callback``, the one
thread-safe door.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from tornado.ioloop import IOLoop

from tornchat.backoff import Backoff

log = logging.getLogger(__name__)

Batch = list[tuple[bytes, bytes]]
_POLL = 0.2  # seconds per read; bounds how long stop() waits
_BATCH = 256  # messages handed to the loop per callback
_READY = b"tornchat-ready"


class SubscriberSilent(redis.ConnectionError):
    """No reply to our PINGs: the connection is half-open."""


class Listener(threading.Thread):
    def __init__(self, url: str, channels: Sequence[str], patterns: Sequence[str],
                 loop: IOLoop, *, on_batch: Callable[[Batch], None],
                 on_state: Callable[[bool, str], None], ping_interval: float,
                 timeout: float, ignore_prefix: bytes = b"\x00") -> None:
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
                if not isinstance(exc, redis.RedisError | OSError):
                    log.exception("unexpected error in the Redis listener")
                self._loop.add_callback(self._on_state, False, f"{type(exc).__name__}: {exc}")
                delay = self._backoff.next()
                log.info("Redis subscriber reconnecting", extra={"delaySeconds": round(delay, 2),
                                                                  "error": str(exc)})
                self._stopping.wait(delay)

    def _session(self) -> None:
        client = redis.Redis.from_url(
            self._url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout,
            socket_keepalive=True, retry=Retry(NoBackoff(), 0))
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            if self._patterns:
                pubsub.psubscribe(*self._patterns)
            pubsub.subscribe(*self._channels)
            pubsub.ping(_READY)
            self._await_ready(pubsub)
            self._backoff.reset()
            self._loop.add_callback(self._on_state, True, "subscribed")
            self._listen(pubsub)
        finally:
            try:
                pubsub.close()
                client.close()
            except Exception:  # closing a broken connection may fail; nothing to do
                log.debug("error closing the Redis subscriber", exc_info=True)

    def _await_ready(self, pubsub: redis.client.PubSub) -> None:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=_POLL)
            if message is not None and message["type"] == "pong" and message["data"] == _READY:
                return
        raise redis.TimeoutError("subscription not confirmed in time")

    def _listen(self, pubsub: redis.client.PubSub) -> None:
        interval = self._ping_interval
        last_heard = time.monotonic()
        next_ping = last_heard + interval
        while not self._stopping.is_set():
            message = pubsub.get_message(timeout=_POLL)
            now = time.monotonic()
            if message is not None:
                last_heard = now
                batch: Batch = []
                while message is not None:
                    if (message["type"] in ("message", "pmessage")
                            and not message["data"].startswith(self._ignore_prefix)):
                        batch.append((message["channel"], message["data"]))
                    if len(batch) >= _BATCH:
                        break
                    message = pubsub.get_message(timeout=0.0)
                if batch:
                    self._loop.add_callback(self._on_batch, batch)
            if now >= next_ping:
                if now - last_heard > 2 * interval:
                    raise SubscriberSilent(f"no reply from Redis for {now - last_heard:.1f}s")
                pubsub.ping()
                next_ping = now + interval
