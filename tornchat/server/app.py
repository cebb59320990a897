"""The application object: owns every piece of runtime state of one process.

:class:`ChatApplication` is built from settings and injected backends (store,
bus, slots, relay), so tests choose real or in-memory parts explicitly and
nothing lives in module globals. It composes the stages (storage, fan-out,
service, sessions) and hands each HTTP handler only what it uses: the socket
handler a :class:`~tornchat.ws.context.SocketContext`, ``/health`` a check,
``/metrics`` the metrics. Thread rule: IOLoop thread only, except the store,
which runs on ``executor``.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.log import access_log

from tornchat.api.base import ApiContext, NotFoundHandler
from tornchat.api.conversations import (
    ConversationHandler,
    ConversationsHandler,
    MessagesHandler,
    ReadHandler,
)
from tornchat.api.devtoken import DevTokenHandler
from tornchat.api.openapi import OpenApiHandler, encoded_document
from tornchat.api.presence import PresenceHandler
from tornchat.api.server import ServerDisconnectHandler, ServerMessagesHandler
from tornchat.auth import TokenVerifier
from tornchat.backoff import Backoff
from tornchat.config import Settings
from tornchat.contract import protocol
from tornchat.fanout.bus import Bus
from tornchat.fanout.dispatch import Dispatcher
from tornchat.fanout.presence import InMemoryPresence, Presence
from tornchat.fanout.registry import ConnectionRegistry
from tornchat.fanout.slots import ConnectionSlots
from tornchat.metrics import Metrics
from tornchat.server.acceptgate import AcceptGate
from tornchat.server.http import HealthHandler, LiveHandler, MetricsHandler
from tornchat.service import ChatService
from tornchat.storage.store import ChatStore
from tornchat.storage.writer import GroupCommitWriter
from tornchat.web import assets
from tornchat.ws.context import SocketContext
from tornchat.ws.framewriter import FrameCache
from tornchat.ws.handler import ChatSocketHandler
from tornchat.ws.heartbeat import Heartbeat
from tornchat.ws.sessions import Sessions

log = logging.getLogger(__name__)

WS_PATH = r"/api/v1/chat"


class EventRelay(Protocol):
    """Publishes stored outbox events (Kafka); optional component of the app."""

    async def start(self) -> None: ...

    async def stop(self, timeout: float) -> None:
        """Flush within ``timeout`` seconds; whatever is unsent stays in the outbox."""

    async def health(self) -> str:
        """``ok``, ``down`` or ``disabled``; chat does not depend on it."""


RECONNECT_AFTER_MS = 5000
IDLE_HTTP_TIMEOUT = 30.0  # seconds an HTTP connection may sit without a complete request


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log line, except for upgrades refused because too many
    connections wait to authenticate: a flood would write one error line
    each; they are counted (``tornchat_connections_refused_pending``) and
    summed up in a warning every ten seconds instead."""
    status = handler.get_status()
    if status == 503 and isinstance(handler, ChatSocketHandler):
        return
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    access_log.log(level, "%d %s %.2fms", status, handler._request_summary(),
                   1000.0 * handler.request.request_time())


class ChatApplication:
    def __init__(self, settings: Settings, store: ChatStore, bus: Bus,
                 slots: ConnectionSlots, relay: EventRelay | None = None,
                 metrics: Metrics | None = None, presence: Presence | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.relay = relay
        self.store = store
        self.bus = bus
        self.slots = slots
        self.presence = presence or InMemoryPresence(slots, bus, settings.presence_grace)
        self.executor = ThreadPoolExecutor(
            max_workers=store.dialect.reader_threads(settings.db_pool_size),
            thread_name_prefix="tornchat-db")
        self.registry = ConnectionRegistry()
        self.dispatcher = Dispatcher(self.registry, settings.order_hold, self.metrics,
                                     presence=self.presence.changed)
        self.writer = GroupCommitWriter(
            store, stages=self.metrics.stages,
            threads=store.dialect.writer_threads(settings.writer_threads))
        self.service = ChatService(store, bus, self.executor, self.writer, self.metrics, slots,
                                   self.presence, event_source=settings.event_source)
        self.sessions = Sessions(self.registry, slots, self.presence, self.metrics)
        self.heartbeat = Heartbeat(self.sessions, slots, settings.heartbeat_interval)
        verifier = TokenVerifier(settings.access_token_secret)
        limits = protocol.Limits(settings.max_message_length, settings.max_recipients,
                                 settings.sync_max_conversations)
        self.socket_context = SocketContext(
            settings=settings, limits=limits, verifier=verifier, service=self.service,
            sessions=self.sessions, frames=FrameCache())
        self.api_context = ApiContext(settings=settings, limits=limits, verifier=verifier,
                                      service=self.service)
        self._openapi = encoded_document(limits)
        self._server: HTTPServer | None = None
        self._health_server: HTTPServer | None = None  # TORNCHAT_HEALTH_PORT
        self._restoring: set[asyncio.Task[None]] = set()
        self.bus.on_lost(self.presence.state_lost)
        self.bus.on_resubscribed(self._restore_shared_state)

    # -- wiring -------------------------------------------------------------

    def make_web_app(self) -> tornado.web.Application:
        api = {"context": self.api_context}
        return tornado.web.Application(
            [
                (WS_PATH, ChatSocketHandler, {"context": self.socket_context}),
                (r"/api/v1/openapi\.json", OpenApiHandler,
                 {**api, "body": self._openapi}),
                (r"/api/v1/conversations", ConversationsHandler, api),
                (r"/api/v1/conversations/([^/]+)", ConversationHandler, api),
                (r"/api/v1/conversations/([^/]+)/messages", MessagesHandler, api),
                (r"/api/v1/conversations/([^/]+)/read", ReadHandler, api),
                (r"/api/v1/presence", PresenceHandler, api),
                (r"/api/v1/server/messages", ServerMessagesHandler, api),
                (r"/api/v1/server/users/([^/]+)/disconnect", ServerDisconnectHandler, api),
                (r"/api/v1/dev/token", DevTokenHandler, api),
                (r"/api/v1/.*", NotFoundHandler, api),
                *self._health_routes(),
                *assets.routes(self.settings.demo_enabled, self.settings.allowed_origins),
            ],
            websocket_max_message_size=self.settings.max_frame_bytes,
            log_function=log_request,
        )

    def _health_routes(self) -> list[Any]:
        return [(r"/health", HealthHandler, {"check": self.health}),
                (r"/health/live", LiveHandler),
                (r"/metrics", MetricsHandler, {"metrics": self.metrics})]

    def make_health_app(self) -> tornado.web.Application:
        """What the health port serves: the probes and the metrics, nothing a
        client of the chat can reach. Its own listener has no accept gate, so
        a flood that holds the main port's accept queue full (every new
        connection waits there up to an auth timeout) cannot make a
        liveness probe time out and restart a worker that is fine."""
        return tornado.web.Application(self._health_routes(), log_function=log_request)

    async def start(self, sockets: list[Any] | None = None,
                    health_sockets: list[Any] | None = None) -> HTTPServer:
        """Start listening (on ``sockets`` if given, else host:port; the health
        port on ``health_sockets`` if given, else on TORNCHAT_HEALTH_PORT if set)."""
        self.writer.start()
        await self.bus.start(self.dispatcher.deliver)
        await self.presence.start()
        if self.relay is not None:
            await self.relay.start()
        # a socket that never completes its request is dropped after 30 s, not
        # Tornado's default hour (connections that never upgrade are not pending)
        self._server = HTTPServer(self.make_web_app(), xheaders=True,
                                  idle_connection_timeout=IDLE_HTTP_TIMEOUT,
                                  body_timeout=IDLE_HTTP_TIMEOUT)
        if sockets is not None:
            self._server.add_sockets(sockets)
        else:
            self._server.listen(self.settings.port, self.settings.host,
                                backlog=self.settings.listen_backlog)
        self.sessions.pending_watch = AcceptGate(
            self._server, self.settings.max_pending_connections, self.metrics)
        if health_sockets or self.settings.health_port:
            self._health_server = HTTPServer(self.make_health_app(),
                                             idle_connection_timeout=IDLE_HTTP_TIMEOUT,
                                             body_timeout=IDLE_HTTP_TIMEOUT)
            if health_sockets:
                self._health_server.add_sockets(health_sockets)
            else:
                self._health_server.listen(self.settings.health_port, self.settings.host)
        self.heartbeat.start()
        return self._server

    def _restore_shared_state(self) -> None:
        """The bus is back after losing Redis, which may have restarted empty:
        write this worker's connection slots, its users' presence records and
        its presence watches again at once. Until then the routed bus would
        find none of its users, presence changes would reach none of its
        watchers (for up to a heartbeat interval), and its users would leave
        without a ``lastSeenAt``. Not while draining: the sessions are
        closing."""
        if self.draining:
            return
        for earlier in list(self._restoring):  # one still retrying: this one replaces it
            earlier.cancel()
        task = asyncio.ensure_future(self._restore())
        self._restoring.add(task)
        task.add_done_callback(self._restoring.discard)

    async def _restore(self) -> None:
        """Until it succeeds (Redis may fail again meanwhile), with capped
        backoff; until then the presence re-reads stay lenient."""
        backoff = Backoff()
        while not self.draining:
            try:
                await self.heartbeat.restore_slots()
                await self.presence.restore(sorted({
                    session.user_id for session in self.sessions
                    if session.user_id is not None}))
                await self.presence.reread_after_loss()
            except Exception as exc:
                delay = backoff.next()
                log.warning("could not restore connection slots, presence and presence "
                            "watches after a Redis outage; retrying in %.1f s: %s", delay, exc)
                await asyncio.sleep(delay)
                continue
            log.info("connection slots, presence and presence watches restored after a "
                     "Redis outage", extra={"connections": len(self.sessions)})
            return

    @property
    def draining(self) -> bool:
        return not self.sessions.accepting

    @property
    def connection_count(self) -> int:
        """Authenticated connections of this process."""
        return len(self.sessions)

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

    async def drain(self, timeout: float) -> None:
        """Stop accepting, tell clients, finish in-flight sends, close with 1001."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.sessions.accepting = False
        self.service.stop_accepting()
        if self._server is not None:
            self._server.stop()
        self.heartbeat.stop()
        self.sessions.expiry.close()  # no session ends for its token while draining
        notice = protocol.server_shutdown(RECONNECT_AFTER_MS)
        sessions = list(self.sessions)
        log.info("draining", extra={"connections": len(sessions),
                                    "inflight": self.service.inflight})
        for session in sessions:
            session.send(notice)
        while self.service.inflight and loop.time() < deadline - 1.0:
            await asyncio.sleep(0.02)
        for session in sessions:
            session.close(1001, "server shutting down")
        while self.sessions.open_count and loop.time() < deadline - 0.5:
            await asyncio.sleep(0.02)
        if self.relay is not None:
            await self.relay.stop(max(0.1, deadline - loop.time() - 0.3))
        await self.close()

    async def close(self) -> None:
        """Release backends (idempotent)."""
        self.heartbeat.stop()
        self.sessions.stop_timers()
        for task in list(self._restoring):  # before the Redis clients close under it
            task.cancel()
        await asyncio.gather(*self._restoring, return_exceptions=True)
        for server in (self._server, self._health_server):  # /health said "draining" until now
            if server is not None:
                server.stop()
        if self._health_server is not None:  # a scraper's keep-alive must not ask what is closing
            await self._health_server.close_all_connections()
        await self.presence.stop()
        await self.bus.stop()
        await self.slots.close()
        await asyncio.to_thread(self.writer.stop, self.settings.shutdown_timeout)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.store.close()
