"""Presence (PROTOCOL §13): who is online, and telling the users who watch.

A user is online while they hold a live connection slot anywhere
(:mod:`tornchat.fanout.slots`) and for ``grace`` seconds after the last one
ends, so a reconnect does not flap. Nothing is stored in the database.

:class:`Presence` holds what every backend shares: subscriptions (through
the local :class:`~tornchat.fanout.watchers.PresenceWatchers`), announcing a
change on the bus (a :data:`~tornchat.fanout.bus.PRESENCE` delivery, only to
the workers that watch the user), and one maintenance task that ends
expired graces (``sweep``) and re-reads every watched user now and then, so a
change lost on the way (pub/sub is at-most-once) heals within
``rewatch_interval``. A backend supplies the cluster-wide state:
:class:`InMemoryPresence` for one process (no ``REDIS_URL``),
:class:`~tornchat.fanout.redis_presence.RedisPresence` for a cluster.

Thread rule: IOLoop thread only.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence

from tornchat.contract import protocol
from tornchat.contract.records import OFFLINE, ONLINE, PresenceStatus
from tornchat.contract.timefmt import iso_from_ms
from tornchat.fanout.bus import PRESENCE, Bus, Delivery
from tornchat.fanout.registry import Connection
from tornchat.fanout.slots import ConnectionSlots
from tornchat.fanout.watchers import PresenceWatchers

log = logging.getLogger(__name__)

_LOOKUP_BATCH = 500  # users per backend call of the re-read


class Presence(abc.ABC):
    def __init__(self, bus: Bus, grace: float, rewatch_interval: float) -> None:
        self.watchers = PresenceWatchers()
        self.grace = grace
        self._bus = bus
        self._sweep_interval = max(0.05, min(1.0, grace / 4))
        self._rewatch_interval = rewatch_interval
        #: the broker was lost and this worker has not written its state again yet
        self._loss_pending = False
        self._lenient_rereads = 0  # lenient periodic re-reads left after that
        self._task: asyncio.Task[None] | None = None

    # -- what a backend supplies -------------------------------------------

    @abc.abstractmethod
    async def connected(self, user_id: str) -> None:
        """The user now holds a live slot (called after it was taken)."""

    @abc.abstractmethod
    async def disconnected(self, user_id: str) -> None:
        """One of the user's slots was given back; the grace starts if it was the last."""

    @abc.abstractmethod
    async def lookup(self, user_ids: Sequence[str], watch: bool = False
                     ) -> list[PresenceStatus]:
        """The users' statuses now (``watch``: and tell this worker of their
        changes from now on). Raises Unavailable when the state cannot be read."""

    @abc.abstractmethod
    async def restore(self, user_ids: Sequence[str]) -> None:
        """After the shared state may have been lost (Redis restarted empty),
        record again that these users, connected here, are online."""

    @abc.abstractmethod
    async def sweep(self) -> None:
        """End the graces and the dead workers' presence that are due, and
        announce each user who went offline."""

    # -- shared ------------------------------------------------------------

    def announce(self, status: PresenceStatus, workers: tuple[str, ...] | None) -> None:
        """Publish a change to the workers watching the user (None: this process)."""
        if workers is not None and not workers:
            return
        self._bus.publish_nowait(Delivery(
            kind=PRESENCE, conversation_id="", user_ids=(status.user_id,),
            frame=protocol.presence(status.to_wire()), to_workers=workers))

    def changed(self, delivery: Delivery) -> None:
        """A change from the bus, for this worker's watchers."""
        self.watchers.changed(PresenceStatus.from_wire(protocol.decode_object(
            delivery.frame)["data"]))

    async def watch(self, connection: Connection, user_ids: Sequence[str]
                    ) -> list[PresenceStatus]:
        """Subscribe ``connection`` to ``user_ids`` and return their statuses.

        Users watched here already are answered from the watchers' last
        status; the others are read (and registered) in one backend call. A
        change arriving while that call runs wins over its answer. All or
        nothing: over the cap, or when the state cannot be read, nothing
        changes and the error is raised.
        """
        watchers = self.watchers
        answered = {user: status for user in user_ids
                    if (status := watchers.latest(user)) is not None}
        fresh = [user for user in user_ids if user not in answered]
        added = watchers.add(connection, user_ids)
        if fresh:
            before = {user: watchers.changes(user) for user in fresh}
            try:
                found = await self.lookup(fresh, watch=True)
            except Exception:
                watchers.remove(connection, added)
                raise
            for status in found:
                if watchers.changes(status.user_id) == before[status.user_id]:
                    watchers.changed(status, exclude=connection.connection_id)
            answered.update((status.user_id, status) for status in found)
        return [watchers.latest(user) or answered[user] for user in user_ids]

    def unwatch(self, connection: Connection, user_ids: Sequence[str]) -> None:
        self.watchers.remove(connection, user_ids)

    def forget(self, connection: Connection) -> None:
        """The connection ended."""
        self.watchers.drop(connection)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._maintain())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # a Redis client may turn the cancellation into an error the loop
            # would survive: the loop also ends because _task is None now
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 1.0)

    async def _maintain(self) -> None:
        next_rewatch = time.monotonic() + self._rewatch_interval
        while self._task is not None:
            await asyncio.sleep(self._sweep_interval)
            try:
                await self.sweep()
                if time.monotonic() >= next_rewatch:
                    next_rewatch = time.monotonic() + self._rewatch_interval
                    await self.rewatch(after_loss=self.periodic_reread_is_lenient())
            except Exception as exc:  # Redis away: the next round tries again
                log.warning("presence maintenance failed: %s", exc)

    def state_lost(self) -> None:
        """The bus lost its broker: the shared state may be gone. Re-reads are
        lenient (:meth:`rewatch`) from now until :meth:`reread_after_loss`."""
        self._loss_pending = True

    def periodic_reread_is_lenient(self) -> bool:
        """Whether the periodic re-read that starts now is lenient: while the
        state is lost, and once right after it was written again."""
        if self._loss_pending:
            return True
        lenient, self._lenient_rereads = self._lenient_rereads > 0, 0
        return lenient

    async def reread_after_loss(self) -> None:
        """This worker has written its shared state again: re-read every
        watched user now, leniently, and the next periodic re-read too, since
        a peer worker may reconnect to Redis a little after this one."""
        self._loss_pending = False
        self._lenient_rereads = 1
        await self.rewatch(after_loss=True)

    async def rewatch(self, after_loss: bool = False) -> None:
        """Re-read every user watched here, renewing the registration, and
        tell the watchers what differs from what they were told.

        ``after_loss``: the shared state was just lost (Redis restarted
        empty). A user told online who reads as offline with no
        ``lastSeenAt`` has no record at all, most likely because their own
        worker has not written it again yet: that change is left to the next
        re-read instead of flapping the user offline and back.
        """
        watchers = self.watchers
        users = watchers.users()
        for start in range(0, len(users), _LOOKUP_BATCH):
            batch = users[start:start + _LOOKUP_BATCH]
            before = {user: watchers.changes(user) for user in batch}
            for status in await self.lookup(batch, watch=True):
                # a change that came while this read ran is newer than the read
                if watchers.changes(status.user_id) != before[status.user_id]:
                    continue
                if after_loss and status.status == OFFLINE and status.last_seen_at is None:
                    told = watchers.latest(status.user_id)
                    if told is not None and told.status == ONLINE:
                        continue
                watchers.changed(status)


def _now_ms() -> int:
    return int(time.time() * 1000)


class InMemoryPresence(Presence):
    """Presence of one process: the slots it counts are this process's own."""

    def __init__(self, slots: ConnectionSlots, bus: Bus, grace: float,
                 last_seen_capacity: int = 100_000) -> None:
        super().__init__(bus, grace, rewatch_interval=3600.0)
        self._slots = slots
        self._online: set[str] = set()
        self._left: dict[str, int] = {}  # user -> when the grace began (epoch ms)
        self._seen: OrderedDict[str, int] = OrderedDict()  # offline user -> last seen
        self._seen_capacity = last_seen_capacity

    async def connected(self, user_id: str) -> None:
        self._left.pop(user_id, None)
        if user_id not in self._online:
            self._online.add(user_id)
            self.announce(PresenceStatus(user_id, ONLINE), None)

    async def disconnected(self, user_id: str) -> None:
        if user_id in self._online and await self._slots.count(user_id) == 0:
            self._left.setdefault(user_id, _now_ms())

    async def lookup(self, user_ids: Sequence[str], watch: bool = False
                     ) -> list[PresenceStatus]:
        return [self._status(user) for user in user_ids]

    async def restore(self, user_ids: Sequence[str]) -> None:
        """Nothing was lost: this process holds the state itself."""

    def _status(self, user_id: str) -> PresenceStatus:
        if user_id in self._online:
            return PresenceStatus(user_id, ONLINE)
        seen = self._seen.get(user_id)
        return PresenceStatus(user_id, OFFLINE, None if seen is None else iso_from_ms(seen))

    async def sweep(self) -> None:
        due = _now_ms() - int(self.grace * 1000)
        for user_id, left in list(self._left.items()):
            if left > due:
                continue
            del self._left[user_id]
            if await self._slots.count(user_id):
                continue
            self._online.discard(user_id)
            self._seen[user_id] = left
            self._seen.move_to_end(user_id)
            if len(self._seen) > self._seen_capacity:
                self._seen.popitem(last=False)
            self.announce(self._status(user_id), None)
