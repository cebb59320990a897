"""Process lifecycle: prepare the schema, bind, run, drain on SIGTERM/SIGINT.

Order on start: validate settings, apply migrations (SQLite) or refuse a stale
schema (PostgreSQL: ``tornchat migrate`` is a deploy step), bind the port,
then build the application, whose database, bus and producer connections are
therefore opened after any fork. With more than one process the parent
becomes a :class:`~tornchat.server.workers.Supervisor` and each forked worker runs
:func:`run_worker`. On SIGTERM or SIGINT: stop accepting, drain
(``ChatApplication.drain``) and exit; a watchdog thread forces the exit if
the drain overruns ``shutdown_timeout``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import signal
import socket
import threading
from dataclasses import dataclass, field

from tornado.netutil import bind_sockets

from tornchat.config import Settings
from tornchat.errors import ConfigError, StartupError
from tornchat.metrics import MULTIPROC_ENV, mark_worker_dead, prepare_multiprocess
from tornchat.server.wiring import build_application
from tornchat.server.workers import Supervisor
from tornchat.storage.database import is_sqlite, startup_database
from tornchat.storage.schema import migrate, pending_migrations

log = logging.getLogger(__name__)

#: generation-1 passes between full collections (CPython's default is 10)
FULL_COLLECTION_EVERY = 100


def prepare_schema(settings: Settings) -> None:
    with startup_database(settings.database_url) as database:
        if is_sqlite(database):
            applied = migrate(database)
            if applied:
                log.info("schema migrated", extra={"applied": applied})
            return
        pending = pending_migrations(database)
        if pending:
            raise ConfigError("DATABASE_URL", f"schema is behind ({', '.join(pending)} "
                              "pending): run `tornchat migrate` first")


@dataclass(frozen=True)
class Listeners:
    """The sockets every worker serves, bound once before any fork."""

    main: list[socket.socket]
    #: /health, /health/live and /metrics only (empty: TORNCHAT_HEALTH_PORT is 0)
    health: list[socket.socket] = field(default_factory=list)


def listen(settings: Settings) -> Listeners:
    """The listening sockets, bound before any fork; a port in use or a host
    that does not resolve is one readable :class:`StartupError`."""
    main = _bind(settings.port, settings, "PORT", settings.listen_backlog)
    if not settings.health_port:
        return Listeners(main)
    try:
        # probes and scrapes are few: Tornado's default queue is plenty
        return Listeners(main, _bind(settings.health_port, settings, "TORNCHAT_HEALTH_PORT", 128))
    except StartupError:
        for sock in main:
            sock.close()
        raise


def _bind(port: int, settings: Settings, name: str, backlog: int) -> list[socket.socket]:
    try:
        return bind_sockets(port, settings.host, backlog=backlog)
    except OSError as exc:
        raise StartupError(f"cannot listen on {settings.host}:{port} "
                           f"(TORNCHAT_HOST, {name}): {exc.strerror or exc}") from exc


def warn_about_settings(settings: Settings) -> None:
    if settings.uses_dev_secret:
        log.warning("ACCESS_TOKEN_SECRET is not set: using the built-in DEVELOPMENT secret. "
                    "Anyone can mint tokens for this server. Set ACCESS_TOKEN_SECRET (32+ "
                    "bytes) and TORNCHAT_ENV=production before exposing it.")
    if not settings.is_production:
        log.warning("TORNCHAT_ENV=development: POST /api/v1/dev/token mints a token for any "
                    "user id. Set TORNCHAT_ENV=production before exposing this server.")
    if settings.demo_enabled:
        log.info("demo chat page on http://%s:%d/demo (TORNCHAT_DEMO=0 turns it off)",
                 "localhost" if settings.host in ("0.0.0.0", "::") else settings.host,
                 settings.port)


def serve(settings: Settings) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit status."""
    count = settings.processes or os.cpu_count() or 1
    if count > 1 and not settings.redis_url:
        cpus = " (0 = one per CPU)" if not settings.processes else ""
        raise ConfigError("TORNCHAT_PROCESSES", f"{count} processes{cpus} need REDIS_URL, "
                          "or the workers could not reach each other's connections")
    warn_about_settings(settings)
    prepare_schema(settings)
    listeners = listen(settings)
    if count == 1:
        if MULTIPROC_ENV in os.environ:
            # the metrics become file-backed once the variable is set: the
            # directory must exist, and an earlier run's files must not count
            prepare_multiprocess()
        return asyncio.run(run_worker(settings, listeners))
    return supervise(settings, listeners, count)


def supervise(settings: Settings, listeners: Listeners, count: int) -> int:
    """Fork ``count`` workers sharing ``listeners``; see :mod:`tornchat.server.workers`."""
    created = prepare_multiprocess()
    try:
        supervisor = Supervisor(
            count, lambda index: asyncio.run(run_worker(settings, listeners)),
            grace=settings.shutdown_timeout + 2.0, on_exit=mark_worker_dead)
        return supervisor.run()
    finally:
        if created:
            shutil.rmtree(created, ignore_errors=True)


def settle_collector() -> None:
    """Once a worker has started: what exists now (modules, classes, the
    application) lives as long as the worker, so the cycle collector need
    never look at it again. A full collection otherwise walks these ~50,000
    objects every time (a 25-50 ms pause measured under load) on top of the
    connections' own.

    And full collections a tenth as often. What the workers keep
    (connections, caches) is freed by reference counting, not by the
    collector (a full pass under load finds nothing: ``collected=0``), and
    cyclic garbage mostly dies young, in the passes this leaves alone. A
    flood of connections that never authenticate pushed a full pass every
    second or two, each a stall of 35-70 ms for every user of the worker
    (docs/performance.md, "Connection floods").
    """
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


async def run_worker(settings: Settings, listeners: Listeners) -> int:
    app = build_application(settings)
    await app.start(listeners.main, listeners.health)
    settle_collector()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("listening", extra={"port": settings.port, "pid": os.getpid(),
                                 **({"healthPort": settings.health_port}
                                    if settings.health_port else {}),
                                 "database": settings.database_kind,
                                 "bus": type(app.bus).__name__})
    await stop.wait()
    log.info("shutdown signal received; draining")
    _start_watchdog(settings.shutdown_timeout)
    await app.drain(settings.shutdown_timeout)
    log.info("shutdown complete")
    return 0


def _start_watchdog(timeout: float) -> None:
    def force_exit() -> None:
        log.error("drain overran the shutdown timeout; forcing exit")
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(timeout, force_exit)
    timer.daemon = True
    timer.start()
