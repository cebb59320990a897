"""Hand deliveries from the bus to local sockets, messages in ``seq`` order.

Ordering across workers and instances is restored here, at the receiver: a
``new_message`` whose lower ``seq`` has not arrived yet is held up to
``hold_seconds`` (``TORNCHAT_ORDER_HOLD``) for it (see :mod:`tornchat.fanout.sequencer`
and docs/scaling.md). Written frames and send-to-deliver latency are counted
in :class:`~tornchat.metrics.Metrics`.

IOLoop thread only: the bus calls :meth:`Dispatcher.deliver` on the loop, and
the hold timer of the sequencer is an IOLoop timeout. A presence change goes to the watchers of
:mod:`tornchat.fanout.presence`, a server-API disconnect to the registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tornado.ioloop import IOLoop

from tornchat.fanout.bus import DISCONNECT, MESSAGE, PRESENCE, Delivery
from tornchat.fanout.registry import ConnectionRegistry
from tornchat.fanout.sequencer import Sequencer
from tornchat.metrics import Metrics


class Dispatcher:
    def __init__(self, registry: ConnectionRegistry, hold_seconds: float = 0.05,
                 metrics: Metrics | None = None,
                 presence: Callable[[Delivery], None] | None = None) -> None:
        self._registry = registry
        self._presence = presence
        self._metrics = metrics
        self._sequencer: Sequencer[Delivery] = Sequencer(hold_seconds)
        self._timer: object | None = None
        self._timer_deadline: float | None = None
        #: when each held message arrived, by (conversation, seq) (stage timing only)
        self._held_since: dict[tuple[str, int], float] = {}

    def deliver(self, delivery: Delivery) -> None:
        if delivery.kind == DISCONNECT:
            self._registry.disconnect(delivery.user_ids, delivery.frame)
        elif delivery.kind == PRESENCE:
            if self._presence is not None:
                self._presence(delivery)
        elif delivery.kind == MESSAGE and delivery.seq is not None:
            ready = self._sequencer.offer(delivery.conversation_id, delivery.seq, delivery)
            if self._timing and not any(ready_one is delivery for ready_one in ready):
                if len(self._held_since) > 10000:  # repeats the sequencer dropped
                    self._held_since.clear()
                self._held_since[(delivery.conversation_id, delivery.seq)] = time.monotonic()
            self._write_all(ready)
            self._schedule()
        else:
            self._write(delivery)

    def _write_all(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            self._write(delivery)

    @property
    def _timing(self) -> bool:
        return self._metrics is not None and self._metrics.stages.enabled

    def _write(self, delivery: Delivery) -> None:
        message = delivery.kind == MESSAGE
        timing = message and self._timing
        started = time.monotonic() if timing else 0.0
        written = self._registry.deliver(delivery.user_ids, delivery.frame,
                                         delivery.exclude_connection, delivery.conversation_id,
                                         delivery.seq if message else None)
        if timing and self._metrics is not None:
            stages = self._metrics.stages
            stages.observe("write", time.monotonic() - started)
            held = (self._held_since.pop((delivery.conversation_id, delivery.seq), None)
                    if delivery.seq is not None else None)
            if held is not None:
                stages.observe("order", started - held)
        if written and message and self._metrics is not None:
            self._metrics.messages_delivered.inc(written)
            self._metrics.delivery_latency.observe(max(0.0, time.time() - delivery.published_at))

    def _schedule(self) -> None:
        deadline = self._sequencer.next_deadline()
        if deadline is None or deadline == self._timer_deadline:
            return
        loop = IOLoop.current()
        if self._timer is not None:
            loop.remove_timeout(self._timer)
        self._timer_deadline = deadline
        self._timer = loop.call_later(max(0.0, deadline - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_deadline = None
        self._write_all(self._sequencer.expire())
        self._schedule()
