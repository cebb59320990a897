"""The application object: owns every piece of runtime state of one process.

:class:`ChatApplication` is built from settings and injected backends (store,
bus, slots), so tests choose real or in-memory parts explicitly and nothing
lives in module globals. Thread rule: IOLoop thread only, except the store,
which runs on ``executor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback

from tornchat import protocol
from tornchat.auth import TokenVerifier
from tornchat.bus import Bus
from tornchat.config import Settings
from tornchat.database import is_sqlite
from tornchat.dispatch import Dispatcher
from tornchat.errors import TooManyConnections
from tornchat.health import HealthHandler
from tornchat.metrics import Metrics, MetricsHandler
from tornchat.registry import ConnectionRegistry
from tornchat.service import ChatService
from tornchat.slots import ConnectionSlots
from tornchat.store import ChatStore
from tornchat.writer import GroupCommitWriter
from tornchat.ws import ChatSocketHandler, FrameCache

log = logging.getLogger("tornchat.app")

WS_PATH = r"/api/v1/chat"


class EventRelay(Protocol):
    """Publishes stored outbox events (Kafka); optional component of the app."""

    async def start(self) -> None: ...

    async def stop(self, timeout: float) -> None:
        """Flush within ``timeout`` seconds; whatever is unsent stays in the outbox."""

    async def health(self) -> str:
        """``ok``, ``down`` or ``disabled``; chat does not depend on it."""


RECONNECT_AFTER_MS = 5000
_BEAT_SLICE = 250  # connections pinged per loop turn


class ChatApplication:
    def __init__(self, settings: Settings, store: ChatStore, bus: Bus,
                 slots: ConnectionSlots, relay: EventRelay | None = None,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.relay = relay
        self.store = store
        self.bus = bus
        self.slots = slots
        workers = 1 if is_sqlite(store.database) else settings.db_pool_size
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tornchat-db")
        self.verifier = TokenVerifier(settings.access_token_secret)
        self.limits = protocol.Limits(settings.max_message_length, settings.max_recipients)
        self.registry = ConnectionRegistry()
        self.frame_cache = FrameCache()
        self.dispatcher = Dispatcher(self.registry, settings.order_hold, self.metrics)
        self.writer = GroupCommitWriter(store)
        self.service = ChatService(store, bus, self.executor, self.writer)
        self.draining = False
        self._handlers: set[ChatSocketHandler] = set()
        self._inflight = 0
        self._heartbeat: PeriodicCallback | None = None
        self._server: HTTPServer | None = None

    # -- wiring -------------------------------------------------------------

    def make_web_app(self) -> tornado.web.Application:
        return tornado.web.Application(
            [
                (WS_PATH, ChatSocketHandler, {"chat": self}),
                (r"/health", HealthHandler, {"chat": self}),
                (r"/metrics", MetricsHandler, {"chat": self}),
            ],
            websocket_max_message_size=self.settings.max_frame_bytes,
        )

    async def start(self, sockets: list[Any] | None = None) -> HTTPServer:
        """Start listening (on ``sockets`` if given, else host:port)."""
        self.writer.start()
        await self.bus.start(self.dispatcher.deliver)
        if self.relay is not None:
            await self.relay.start()
        self._server = HTTPServer(self.make_web_app(), xheaders=True)
        if sockets is not None:
            self._server.add_sockets(sockets)
        else:
            self._server.listen(self.settings.port, self.settings.host)
        self._heartbeat = PeriodicCallback(self.heartbeat, self.settings.heartbeat_interval * 1000)
        self._heartbeat.start()
        return self._server

    # -- connections --------------------------------------------------------

    def origin_allowed(self, origin: str, host: str) -> bool:
        """Browsers must come from an allowed Origin; same-host is always fine."""
        allowed = self.settings.allowed_origins
        origin = origin.rstrip("/")
        if "*" in allowed or origin in allowed:
            return True
        return origin.split("://", 1)[-1].lower() == host.lower()

    def connection_opened(self, handler: ChatSocketHandler) -> None:
        self._handlers.add(handler)

    async def authenticate(self, handler: ChatSocketHandler, user_id: str) -> None:
        if not await self.slots.acquire(user_id, handler.connection_id):
            raise TooManyConnections()
        if handler not in self._handlers:  # closed while the slot was being taken
            await self.slots.release(user_id, handler.connection_id)
            return
        handler.user_id = user_id
        self.registry.add(handler)
        self.metrics.connections.inc()

    def connection_closed(self, handler: ChatSocketHandler) -> None:
        """Idempotent cleanup of every registry a connection is in."""
        self._handlers.discard(handler)
        if self.registry.remove(handler):
            assert handler.user_id is not None
            self.metrics.connections.dec()
            IOLoop.current().add_callback(self.slots.release, handler.user_id,
                                          handler.connection_id)
            log.info("connection closed", extra={"connectionId": handler.connection_id,
                                                 "userId": handler.user_id})

    @property
    def connection_count(self) -> int:
        return len(self.registry)

    async def heartbeat(self) -> None:
        """Ping every connection; terminate those that missed the last pong.

        A slice at a time, yielding to the loop in between: with 10,000
        connections a single pass would hold every message up for as long
        as it runs. Each ping is a prebuilt frame written straight to the
        socket (``ChatSocketHandler.send_ping``).
        """
        pinged: list[ChatSocketHandler] = []
        handlers = list(self._handlers)
        for start in range(0, len(handlers), _BEAT_SLICE):
            if start:
                await asyncio.sleep(0)
            for handler in handlers[start:start + _BEAT_SLICE]:
                if handler.user_id is None or handler not in self._handlers:
                    continue
                if handler.awaiting_pong:
                    log.info("heartbeat missed; terminating", extra={
                        "connectionId": handler.connection_id, "userId": handler.user_id})
                    handler.terminate()
                    continue
                handler.awaiting_pong = True
                handler.send_ping()
                pinged.append(handler)
        # only those still open: a slot refreshed after its connection closed
        # (during a later slice) would count against the user until it expires
        await self.slots.refresh([(handler.user_id, handler.connection_id)
                                  for handler in pinged
                                  if handler in self._handlers and handler.user_id])

    # -- health -------------------------------------------------------------

    async def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body): 503 when a dependency chat needs is down."""
        database = "ok"
        try:
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.run_in_executor(self.executor, self.store.ping), 3.0)
        except Exception:
            database = "down"
        if not self.writer.alive:  # nothing could be stored any more
            database = "down"
        bus = await self.bus.health()
        kafka = await self.relay.health() if self.relay is not None else "disabled"
        dependencies = {"database": database, self.bus.dependency: bus, "kafka": kafka}
        healthy = database == "ok" and bus != "down" and not self.draining
        body = {
            "status": "ok" if healthy else ("draining" if self.draining else "degraded"),
            "dependencies": dependencies,
            "connections": self.connection_count,
        }
        return (200 if healthy else 503), body

    # -- shutdown -----------------------------------------------------------

    @contextlib.contextmanager
    def track_inflight(self) -> Iterator[None]:
        """Wrap one send: drain waits for it; it counts as sent when it returns."""
        self.send_started()
        stored = False
        try:
            yield
            stored = True
        finally:
            self.send_finished(stored)

    def send_started(self) -> None:
        """A send is in flight: drain waits for it (pair with :meth:`send_finished`)."""
        self._inflight += 1

    def send_finished(self, stored: bool) -> None:
        self._inflight -= 1
        if stored:
            self.metrics.messages_sent.inc()

    async def drain(self, timeout: float) -> None:
        """Stop accepting, tell clients, finish in-flight sends, close with 1001."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.draining = True
        if self._server is not None:
            self._server.stop()
        if self._heartbeat is not None:
            self._heartbeat.stop()
        notice = protocol.server_shutdown(RECONNECT_AFTER_MS)
        handlers = list(self._handlers)
        log.info("draining", extra={"connections": len(handlers), "inflight": self._inflight})
        for handler in handlers:
            handler.send(notice)
        while self._inflight and loop.time() < deadline - 1.0:
            await asyncio.sleep(0.02)
        for handler in handlers:
            handler.close(1001, "server shutting down")
        while self._handlers and loop.time() < deadline - 0.5:
            await asyncio.sleep(0.02)
        if self.relay is not None:
            await self.relay.stop(max(0.1, deadline - loop.time() - 0.3))
        await self.close()

    async def close(self) -> None:
        """Release backends (idempotent)."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._server is not None:
            self._server.stop()
        await self.bus.stop()
        await self.slots.close()
        await asyncio.to_thread(self.writer.stop, self.settings.shutdown_timeout)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.store.close()
