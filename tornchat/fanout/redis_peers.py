"""Peer discovery on the Redis bus (one Redis, either mode): a worker alone publishes nothing.

Why: in pattern mode a worker with no peer would pay, per message, a publish
and the parsing of its own echo for nobody (in routed mode, a routing script
that finds nobody). Every worker subscribes to its
own probe channel, so ``PUBSUB CHANNELS tornchat:probe:*`` names the live
workers; a worker that finds only itself there delivers locally and skips
Redis. It checks again every ``interval`` seconds. A worker that
(re)subscribes announces itself on ``tornchat:hello``; every other worker
starts publishing when it hears that, then acknowledges on the newcomer's
probe channel. On start, a worker waits (up to :data:`HELLO_WAIT`) for an
acknowledgement from every worker it found, so each of them publishes before
its first client can be sent anything.

Contract: :attr:`PeerWatch.alone` is True only while the last check found no
other worker, Redis answered, this worker was subscribed and no hello arrived
meanwhile. A check whose answer arrives after a hello was heard is discarded,
so a stale "alone" never wins; any Redis error means "publish".

After an outage the watch also says when the workers it knew before are
listening again (:meth:`PeerWatch.returned`): the bus holds its kept
deliveries until then, because a publish that lands while a peer is still
resubscribing is lost to it.

Thread rule: IOLoop thread only. The bus (:mod:`tornchat.fanout.redis_bus`)
owns the watch and hands it, already on the loop, the subscription state and
the hellos and acknowledgements its listener thread received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from redis.exceptions import RedisError

from tornchat.backoff import Backoff
from tornchat.fanout.redis_wire import ACK_PREFIX, HELLO_CHANNEL, PROBE_CHANNEL_PREFIX, AnyRedis

log = logging.getLogger(__name__)

HELLO_WAIT = 2.0  # seconds a starting worker waits for its peers' acknowledgements
_RETURN_POLL = 0.05  # seconds between looks for peers resubscribing after an outage


class PeerWatch:
    """Whether any other worker listens on the bus, kept current."""

    def __init__(self, client: AnyRedis, worker_id: str, *, interval: float,
                 timeout: float) -> None:
        """``client``: the bus's probe client (never its publisher, which may be busy)."""
        #: read by the bus on every publish; written only by this watch
        self.alone = False  # publish until a check proves nobody else listens
        self._redis = client
        self._worker_id = worker_id
        self._worker_id_bytes = worker_id.encode()
        self._interval = interval
        self._timeout = timeout
        self._watching = False
        self._up = False
        self._hellos_heard = 0
        self._announced = asyncio.Event()
        self._acks: set[str] = set()
        self._acked = asyncio.Event()
        #: the other workers the last answer named (checks, announcements, hellos)
        self._known: set[str] = set()
        #: those known when the subscription was last lost: :meth:`returned` waits for them
        self._before_outage: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Check every ``interval`` seconds, and announce on every subscription."""
        self._watching = True
        self._spawn(self._watch())

    async def announced(self) -> None:
        """Return once the first announcement is acknowledged by every worker
        found, or given up on (bounded)."""
        with contextlib.suppress(TimeoutError):  # _announce gives up in time itself
            await asyncio.wait_for(self._announced.wait(), HELLO_WAIT + 2 * self._timeout)

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # -- from the bus ------------------------------------------------------

    def subscribed(self, up: bool) -> None:
        """The bus's subscriber is (re)subscribed, or lost its subscription."""
        self._up = up
        if not up:
            self._before_outage = set(self._known)
            self._set_alone(False)
        elif self._watching:
            self._spawn(self._announce())

    def heard_hello(self, worker: bytes) -> None:
        if worker != self._worker_id_bytes:
            self._hellos_heard += 1
            self._known.add(worker.decode(errors="replace"))
            self._set_alone(False)  # before the acknowledgement: it promises this
            self._spawn(self._acknowledge(worker.decode(errors="replace")))

    def heard_ack(self, data: bytes) -> None:
        """``data``: :data:`~tornchat.fanout.redis_wire.ACK_PREFIX` + the peer's id."""
        self._acks.add(data[len(ACK_PREFIX):].decode(errors="replace"))
        self._acked.set()

    async def check(self) -> None:
        """Go alone only if no other worker's probe channel exists and no
        hello arrived while asking; any doubt (an error) means publish."""
        hellos = self._hellos_heard
        try:
            others = await self._other_workers()
        except RedisError:
            self._set_alone(False)
            return
        if hellos == self._hellos_heard:
            self._known = others
        self._set_alone(not others and self._up and hellos == self._hellos_heard)

    async def returned(self, bound: float) -> frozenset[str]:
        """Return once every worker known when the subscription was lost is
        subscribed again, or after ``bound`` seconds (a worker that died
        meanwhile never is); returns those workers and any other that
        listens now (one started during the outage).

        Why poll: a peer's hello may be published before this worker's own
        subscription is back, so only its probe channel proves it listens."""
        deadline = asyncio.get_running_loop().time() + bound
        waiting = set(self._before_outage)
        listening: set[str] = set()
        while True:
            with contextlib.suppress(RedisError):
                listening = await self._other_workers()
                waiting -= listening
            if not waiting or asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(_RETURN_POLL)
        if waiting:
            log.warning("workers known before the outage did not resubscribe in time; "
                        "publishing the kept deliveries anyway",
                        extra={"workers": sorted(waiting)})
        return frozenset(self._before_outage | listening)

    # -- internals -----------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()

    async def _announce(self) -> None:
        """Tell every worker this one listens (retrying while subscribed),
        then wait, up to ``HELLO_WAIT``, until each worker found has
        acknowledged: each does so only once it publishes to this one."""
        backoff = Backoff()
        self._acks.clear()
        while True:
            if not self._up:
                return
            try:
                await self._redis.publish(HELLO_CHANNEL, self._worker_id)
                peers = await self._other_workers()
                self._known |= peers
                break
            except RedisError as exc:
                log.warning("could not announce this worker on the bus; retrying: %s", exc)
                await asyncio.sleep(backoff.next())
        deadline = asyncio.get_running_loop().time() + HELLO_WAIT
        while not peers <= self._acks:
            self._acked.clear()
            left = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(self._acked.wait(), max(left, 0.0))
            except TimeoutError:
                log.warning("workers did not acknowledge this worker's hello in time; "
                            "they find it at their next check", extra={
                                "workers": sorted(peers - self._acks)})
                break
        self._announced.set()
        await self.check()

    async def _acknowledge(self, newcomer: str) -> None:
        with contextlib.suppress(RedisError):  # its wait is bounded; our checks find it
            await self._redis.publish(PROBE_CHANNEL_PREFIX + newcomer,
                                      ACK_PREFIX + self._worker_id_bytes)

    async def _other_workers(self) -> set[str]:
        """Ids of the other workers subscribed now (their probe channels)."""
        channels = await self._redis.pubsub_channels(PROBE_CHANNEL_PREFIX + "*")
        names = {c.decode() if isinstance(c, bytes) else c for c in channels}
        return {name[len(PROBE_CHANNEL_PREFIX):] for name in names} - {self._worker_id}

    def _set_alone(self, alone: bool) -> None:
        if alone != self.alone:
            self.alone = alone
            log.info("no other worker listens: deliveries stay local" if alone
                     else "other workers listen: deliveries are published",
                     extra={"workerId": self._worker_id})
