"""The fan-out seam: how a stored message, a moved read position or a typing
signal reaches every process that holds a recipient's connection.

:class:`Bus` is the interface the service publishes to and the application
listens on; :class:`InMemoryBus` serves one process (the default without
``REDIS_URL``). A Redis implementation plugs in behind the same interface.

A stored message takes two roads: :meth:`Bus.deliver_local` on the IOLoop
for this process's connections, and :meth:`Bus.publish_committed`, called
by the group-commit writer's thread right after the commit, for the other
processes. The second road never waits for this process's IOLoop: under
load a message bound for another worker used to queue twice behind the
loop's other work (the writer's answer, then the bus's publish task) before
it left for Redis.

Thread rule: ``publish``, ``publish_nowait`` and ``deliver_local`` are called
on the IOLoop thread, ``publish_committed`` on the writer's; the ``deliver``
callback given to ``start`` is always invoked on the IOLoop thread
(implementations with their own threads hand over with ``add_callback``).
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

MESSAGE = "message"
TYPING = "typing"
READ = "read"  # a read position moved: kept through an outage, unlike typing
DISCONNECT = "disconnect"  # the server API ends a user's sessions: frame, then close 4003
PRESENCE = "presence"  # a user's presence changed: for the connections watching them


@dataclass(frozen=True)
class Delivery:
    """One fan-out: a frame encoded once, for the live connections of ``user_ids``.

    ``exclude_connection`` is the sending connection (it gets ``message_sent``
    instead); ``seq`` orders messages at the receiver; ``published_at`` (epoch
    seconds) measures send-to-deliver latency. Between processes it travels in
    the envelope of :mod:`tornchat.fanout.redis_wire`. ``to_workers`` names
    the worker processes that want it (a presence change goes only to the
    workers watching that user); None means every worker that holds a
    connection of ``user_ids``. It is an address, not part of the envelope.
    """

    kind: str
    conversation_id: str
    user_ids: tuple[str, ...]
    frame: str
    exclude_connection: str | None = None
    seq: int | None = None
    published_at: float = field(default_factory=time.time)
    to_workers: tuple[str, ...] | None = None
    #: when the publisher took it from its queue for Redis (stage timing only)
    sent_at: float | None = None


DeliverCallback = Callable[[Delivery], None]


class Bus(abc.ABC):
    """Publish deliveries to every process; hand received ones to ``deliver``."""

    #: the dependency name shown on /health
    dependency = "redis"
    #: whether other processes get deliveries (so :meth:`publish_committed` matters)
    crosses_processes = True

    @abc.abstractmethod
    async def start(self, deliver: DeliverCallback) -> None:
        """Begin listening; ``deliver`` runs on the IOLoop thread."""

    @abc.abstractmethod
    def publish_nowait(self, delivery: Delivery) -> None:
        """Send a delivery to every subscribed process (this one included),
        without waiting for anything: a bus queues what it cannot send now."""

    async def publish(self, delivery: Delivery) -> None:
        """:meth:`publish_nowait`, for callers that await."""
        self.publish_nowait(delivery)

    @abc.abstractmethod
    def deliver_local(self, delivery: Delivery) -> None:
        """Deliver to this process's connections only (on the next loop turn)."""

    def publish_committed(self, deliveries: Sequence[Delivery]) -> None:
        """From the writer thread: send committed messages to the other
        processes only, in order, without waiting for this process's IOLoop.
        A single-process bus has nobody to send them to."""
        return None

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the IOLoop each time the bus loses its broker:
        what this process keeps there may be gone until ``on_resubscribed``. A
        bus that cannot lose its broker never calls it."""
        return None

    def on_resubscribed(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the IOLoop each time the bus is back after losing
        its broker (never at the first subscription). Redis may have restarted
        empty: whatever this process keeps there must be written again. A bus
        that cannot lose its broker never calls it."""
        return None

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop listening and release connections."""

    @abc.abstractmethod
    async def health(self) -> str:
        """``ok``, ``down`` or ``disabled``."""


class InMemoryBus(Bus):
    """Single-process bus: deliveries loop back on the next IOLoop iteration."""

    crosses_processes = False

    def __init__(self) -> None:
        self._deliver: DeliverCallback | None = None

    async def start(self, deliver: DeliverCallback) -> None:
        self._deliver = deliver

    def publish_nowait(self, delivery: Delivery) -> None:
        self.deliver_local(delivery)

    def deliver_local(self, delivery: Delivery) -> None:
        if self._deliver is not None:
            asyncio.get_running_loop().call_soon(self._deliver, delivery)

    async def stop(self) -> None:
        self._deliver = None

    async def health(self) -> str:
        return "disabled"
