"""Production wiring: choose the backends from settings and build the app.

Call :func:`build_application` inside the worker process (after any fork):
it creates the database pool, bus clients and event producer, none of which
survive a fork.
"""

from __future__ import annotations

from tornchat.app import ChatApplication
from tornchat.bus import Bus, InMemoryBus
from tornchat.config import Settings
from tornchat.database import open_database
from tornchat.slots import ConnectionSlots, InMemorySlots
from tornchat.store import ChatStore


def build_bus(settings: Settings) -> Bus:
    return InMemoryBus()


def build_slots(settings: Settings) -> ConnectionSlots:
    return InMemorySlots(settings.max_connections_per_user)


def build_application(settings: Settings) -> ChatApplication:
    store = ChatStore(open_database(settings.database_url, settings.db_pool_size),
                      event_source=settings.event_source)
    return ChatApplication(settings, store, build_bus(settings), build_slots(settings))
