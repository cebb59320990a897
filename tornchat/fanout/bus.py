"""The fan-out seam: how a stored message or a typing signal reaches every
process that holds a recipient's connection.

:class:`Bus` is the interface the service publishes to and the application
listens on; :class:`InMemoryBus` serves one process (the default without
``REDIS_URL``). A Redis implementation plugs in behind the same interface.

Thread rule: ``publish`` (or ``publish_nowait``) is called on the IOLoop
thread; the ``deliver`` callback given to ``start`` is always invoked on that
same IOLoop thread (implementations with their own threads hand over with
``add_callback``).
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

MESSAGE = "message"
TYPING = "typing"


@dataclass(frozen=True)
class Delivery:
    """One fan-out: a frame encoded once, for the live connections of ``user_ids``.

    ``exclude_connection`` is the sending connection (it gets ``message_sent``
    instead); ``seq`` orders messages at the receiver; ``published_at`` (epoch
    seconds) measures send-to-deliver latency.
    """

    kind: str
    conversation_id: str
    user_ids: tuple[str, ...]
    frame: str
    exclude_connection: str | None = None
    seq: int | None = None
    published_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        """Compact JSON (orjson; on the publish path of every message)."""
        return orjson.dumps({
            "kind": self.kind, "conversation_id": self.conversation_id,
            "user_ids": self.user_ids, "frame": self.frame,
            "exclude_connection": self.exclude_connection, "seq": self.seq,
            "published_at": self.published_at,
        }).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> Delivery:
        data: dict[str, Any] = orjson.loads(text)
        return cls(data["kind"], data["conversation_id"], tuple(data["user_ids"]),
                   data["frame"], data.get("exclude_connection"), data.get("seq"),
                   data.get("published_at", 0.0))


DeliverCallback = Callable[[Delivery], None]


class Bus(abc.ABC):
    """Publish deliveries to every process; hand received ones to ``deliver``."""

    #: the dependency name shown on /health
    dependency = "redis"

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
    async def stop(self) -> None:
        """Stop listening and release connections."""

    @abc.abstractmethod
    async def health(self) -> str:
        """``ok``, ``down`` or ``disabled``."""


class InMemoryBus(Bus):
    """Single-process bus: deliveries loop back on the next IOLoop iteration."""

    def __init__(self) -> None:
        self._deliver: DeliverCallback | None = None

    async def start(self, deliver: DeliverCallback) -> None:
        self._deliver = deliver

    def publish_nowait(self, delivery: Delivery) -> None:
        if self._deliver is not None:
            asyncio.get_running_loop().call_soon(self._deliver, delivery)

    async def stop(self) -> None:
        self._deliver = None

    async def health(self) -> str:
        return "disabled"
