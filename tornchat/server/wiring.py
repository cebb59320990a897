"""Production wiring: choose the backends from settings and build the app.

Call :func:`build_application` inside the worker process (after any fork):
it creates the database pool, bus clients and event producer, none of which
survive a fork.
"""

from __future__ import annotations

from tornchat.config import Settings
from tornchat.events.relay import build_relay
from tornchat.fanout.bus import Bus, InMemoryBus
from tornchat.fanout.presence import InMemoryPresence, Presence
from tornchat.fanout.redis_bus import RedisBus, new_worker_id
from tornchat.fanout.redis_presence import RedisPresence
from tornchat.fanout.redis_slots import RedisSlots
from tornchat.fanout.slots import ConnectionSlots, InMemorySlots
from tornchat.metrics import Metrics
from tornchat.server.app import ChatApplication
from tornchat.storage.database import open_database
from tornchat.storage.store import ChatStore

#: a connection slot lives this many heartbeat intervals without a refresh, so
#: one missed refresh never frees a live connection's slot
SLOT_TTL_HEARTBEATS = 2.5


def build_bus(settings: Settings, metrics: Metrics, worker_id: str) -> Bus:
    if not settings.redis_url:
        return InMemoryBus()
    return RedisBus(settings.redis_url, worker_id, metrics, mode=settings.bus_mode,
                    probe_interval=settings.redis_probe_interval,
                    backlog=settings.bus_backlog)


def build_slots(settings: Settings, worker_id: str) -> ConnectionSlots:
    if not settings.redis_url:
        return InMemorySlots(settings.max_connections_per_user)
    return RedisSlots(settings.redis_url, worker_id, settings.max_connections_per_user,
                      ttl=SLOT_TTL_HEARTBEATS * settings.heartbeat_interval)


def build_presence(settings: Settings, worker_id: str, bus: Bus,
                   slots: ConnectionSlots) -> Presence:
    if not settings.redis_url:
        return InMemoryPresence(slots, bus, settings.presence_grace)
    return RedisPresence(settings.redis_url, worker_id, bus, grace=settings.presence_grace,
                         slot_ttl=SLOT_TTL_HEARTBEATS * settings.heartbeat_interval,
                         rewatch_interval=settings.heartbeat_interval)


def build_application(settings: Settings) -> ChatApplication:
    store = ChatStore(open_database(settings.database_url, settings.db_pool_size,
                                    settings.writer_threads),
                      event_source=settings.event_source)
    metrics = Metrics(stage_timing=bool(settings.stage_timing))
    worker_id = new_worker_id()
    bus = build_bus(settings, metrics, worker_id)
    slots = build_slots(settings, worker_id)
    return ChatApplication(settings, store, bus, slots, metrics=metrics,
                           relay=build_relay(settings, metrics.registry),
                           presence=build_presence(settings, worker_id, bus, slots))
