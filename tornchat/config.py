"""Typed settings from defaults, a TOML file, the environment and the CLI.

Precedence, lowest first: built-in default, the config file (``--config`` or
``TORNCHAT_CONFIG``), environment variables, command-line flags. The seed's
variable names are honoured as they are (``PORT``, ``DATABASE_URL``,
``ACCESS_TOKEN_SECRET``, ``REDIS_URL``, ``KAFKA_BROKER``, ``LOG_LEVEL``); every
other setting is ``TORNCHAT_<NAME>`` in the environment and ``<name>`` in the
file. Every value is validated once, at start, and a bad one raises
:class:`~tornchat.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from tornchat.errors import ConfigError

DEV_SECRET = "tornchat-development-secret-do-not-use-in-production"
MIN_PRODUCTION_SECRET_BYTES = 32
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "json", "text")
BUS_MODES = ("pattern", "routed")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
REDIS_SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)
DEMO_MODES = ("auto", "1", "0")


def _setting(default: Any, env: str, doc: str, secret: bool = False) -> Any:
    """A setting; a ``secret`` one stays out of the settings' ``repr``."""
    return field(default=default, repr=not secret, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Every knob of the service; see ``conf/tornchat.toml`` for commented defaults."""

    port: int = _setting(4004, "PORT", "TCP port of the HTTP/WebSocket server")
    health_port: int = _setting(
        0, "TORNCHAT_HEALTH_PORT",
        "a second TCP port serving only /health, /health/live and /metrics, which a flood "
        "of connections on PORT cannot crowd out; 0 = off (they are on PORT either way)")
    host: str = _setting("0.0.0.0", "TORNCHAT_HOST", "interface to bind")
    env: str = _setting("development", "TORNCHAT_ENV", "development or production")
    demo: str = _setting(
        "auto", "TORNCHAT_DEMO",
        "the demo chat page at /demo: 1 on, 0 off, auto = on in development only"
    )
    database_url: str = _setting(
        "sqlite:///tornchat.db", "DATABASE_URL", "sqlite:///path or postgresql://user:pass@host/db"
    )
    access_token_secret: str = _setting("", "ACCESS_TOKEN_SECRET", "HS256 secret of the JWTs",
                                        secret=True)
    redis_url: str = _setting("", "REDIS_URL", "redis://host:6379/0; empty = in-memory bus")
    kafka_broker: str = _setting("", "KAFKA_BROKER", "host:9092; empty = events stay in outbox")
    log_level: str = _setting("info", "LOG_LEVEL", "debug, info, warning, error, critical")
    log_format: str = _setting(
        "auto", "TORNCHAT_LOG_FORMAT",
        "json, text, or auto: text when stderr is a terminal, else JSON")
    processes: int = _setting(
        1, "TORNCHAT_PROCESSES", "worker processes; 0 = one per CPU; more than 1 needs REDIS_URL")
    auth_timeout: float = _setting(5.0, "TORNCHAT_AUTH_TIMEOUT", "seconds to send the auth frame")
    heartbeat_interval: float = _setting(
        30.0, "TORNCHAT_HEARTBEAT_INTERVAL", "seconds between server pings"
    )
    shutdown_timeout: float = _setting(
        5.0, "TORNCHAT_SHUTDOWN_TIMEOUT", "seconds to drain before a forced exit"
    )
    max_pending_connections: int = _setting(
        1000, "TORNCHAT_MAX_PENDING_CONNECTIONS",
        "WebSocket connections per worker that have not authenticated yet; at the cap "
        "the worker stops accepting until fewer than 90% wait (one accepted in that "
        "turn gets 503)"
    )
    listen_backlog: int = _setting(
        1024, "TORNCHAT_LISTEN_BACKLOG",
        "TCP connections the kernel queues for accepting (capped by net.core.somaxconn)"
    )
    max_connections_per_user: int = _setting(
        5, "TORNCHAT_MAX_CONNECTIONS_PER_USER", "live connections a user may hold"
    )
    max_message_length: int = _setting(
        4000, "TORNCHAT_MAX_MESSAGE_LENGTH", "characters in a message's content"
    )
    max_frame_bytes: int = _setting(
        65536, "TORNCHAT_MAX_FRAME_BYTES", "largest inbound frame; bigger closes with 1009"
    )
    max_recipients: int = _setting(100, "TORNCHAT_MAX_RECIPIENTS", "recipientIds per message")
    max_outbound_bytes: int = _setting(
        1048576, "TORNCHAT_MAX_OUTBOUND_BYTES",
        "unsent bytes a connection may queue; more closes it with 4008 (slow consumer)"
    )
    sync_max_conversations: int = _setting(
        200, "TORNCHAT_SYNC_MAX_CONVERSATIONS", "conversations one sync may list"
    )
    sync_max_replay: int = _setting(
        100, "TORNCHAT_SYNC_MAX_REPLAY", "messages a sync replays per conversation (newest)"
    )
    api_key: str = _setting(
        "", "TORNCHAT_API_KEY", "X-API-Key of the server API, 32+ bytes; unset: the API is off",
        secret=True)
    sync_hold: float = _setting(
        0.25, "TORNCHAT_SYNC_HOLD", "seconds live messages wait after auth for a first-frame sync"
    )
    presence_grace: float = _setting(
        10.0, "TORNCHAT_PRESENCE_GRACE",
        "seconds a user stays online after their last connection ends (0 to 3600)"
    )
    rate_limit_per_second: float = _setting(
        20.0, "TORNCHAT_RATE_LIMIT_PER_SECOND", "sustained frames per second per connection"
    )
    rate_limit_burst: int = _setting(
        40, "TORNCHAT_RATE_LIMIT_BURST", "frames a connection may send in a burst"
    )
    allowed_origins: tuple[str, ...] = _setting(
        (), "TORNCHAT_ALLOWED_ORIGINS", "comma list of browser Origins; * = any"
    )
    db_pool_size: int = _setting(
        8, "TORNCHAT_DB_POOL_SIZE", "PostgreSQL reader connections per worker (plus one per "
        "writer thread, and two for the Kafka relay)")
    writer_threads: int = _setting(
        1, "TORNCHAT_WRITER_THREADS",
        "group-commit batches in flight per worker (PostgreSQL; SQLite always 1)")
    kafka_topic: str = _setting("chat-events", "TORNCHAT_KAFKA_TOPIC", "topic of MessageSent")
    kafka_publish_timeout: float = _setting(
        10.0, "TORNCHAT_KAFKA_PUBLISH_TIMEOUT",
        "seconds Kafka gets to acknowledge a batch before it is retried from the outbox"
    )
    outbox_batch_size: int = _setting(
        200, "TORNCHAT_OUTBOX_BATCH_SIZE", "outbox events a relay publishes per round"
    )
    outbox_poll_interval: float = _setting(
        0.1, "TORNCHAT_OUTBOX_POLL_INTERVAL",
        "seconds a caught-up relay waits between outbox checks"
    )
    outbox_retention_hours: float = _setting(
        24.0, "TORNCHAT_OUTBOX_RETENTION_HOURS", "hours sent events stay in the outbox"
    )
    event_source: str = _setting("chat-service", "TORNCHAT_EVENT_SOURCE", "event source field")
    bus_mode: str = _setting(
        "pattern", "TORNCHAT_BUS_MODE",
        "Redis fan-out: pattern (every worker gets every message) or routed (docs/scaling.md)"
    )
    order_hold: float = _setting(
        0.2, "TORNCHAT_ORDER_HOLD", "seconds a message waits for a missing lower seq"
    )
    redis_probe_interval: float = _setting(
        5.0, "TORNCHAT_REDIS_PROBE_INTERVAL",
        "seconds between subscriber pings (silence for 2x this forces a reconnect) and "
        "between checks for other workers"
    )
    stage_timing: int = _setting(
        0, "TORNCHAT_STAGE_TIMING",
        "1 = time each stage of a message's path (tornchat_stage_seconds on /metrics)"
    )
    bus_backlog: int = _setting(
        10000, "TORNCHAT_BUS_BACKLOG", "deliveries kept for re-publishing while Redis is down"
    )

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def demo_enabled(self) -> bool:
        return self.demo == "1" or (self.demo == "auto" and not self.is_production)

    @property
    def uses_dev_secret(self) -> bool:
        return self.access_token_secret == DEV_SECRET

    @property
    def database_kind(self) -> str:
        postgres = self.database_url.startswith(("postgres://", "postgresql://"))
        return "postgresql" if postgres else "sqlite"


def _parse_origins(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(str(item).strip().rstrip("/") for item in items if str(item).strip())


_PARSERS: Mapping[str, Callable[[Any], Any]] = MappingProxyType({
    "int": int,
    "float": float,
    "str": str,
    "tuple[str, ...]": _parse_origins,
})


#: what a value of each type must look like, for the error that refuses one
_EXPECTED: Mapping[str, str] = MappingProxyType({
    "int": "a whole number", "float": "a number", "str": "text",
    "tuple[str, ...]": "a comma-separated list",
})


def _coerce(spec: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    kind = str(spec.type)
    parser = _PARSERS[kind]
    expected = ("a number of seconds" if kind == "float"
                and spec.metadata["doc"].startswith("seconds") else _EXPECTED[kind])
    if kind in ("int", "float") and isinstance(raw, bool):
        raise ConfigError(source, f"must be {expected}, got {raw!r}")
    try:
        return parser(raw)
    except (TypeError, ValueError):
        raise ConfigError(source, f"must be {expected}, got {raw!r}") from None


def read_config_file(path: str) -> dict[str, Any]:
    """Read a TOML file of ``name = value`` lines; errors name the file."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("TORNCHAT_CONFIG", f"config file {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("TORNCHAT_CONFIG", f"{path}: {exc}") from None
    return data.get("tornchat", data)


def load_settings(
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build validated settings; raises ConfigError with the variable's name."""
    environ = os.environ if environ is None else environ
    fields = {spec.name: spec for spec in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}

    path = config_file or environ.get("TORNCHAT_CONFIG")
    if path:
        for key, raw in read_config_file(path).items():
            if key not in fields:
                raise ConfigError(f"{path}: {key}", "unknown setting")
            values[key] = _coerce(fields[key], raw, f"{path}: {key}")

    for name, spec in fields.items():
        env_name = spec.metadata["env"]
        if env_name in environ and environ[env_name] != "":
            values[name] = _coerce(spec, environ[env_name], env_name)
    if "env" not in values and environ.get("NODE_ENV") in ("development", "production"):
        values["env"] = environ["NODE_ENV"]  # the seed's variable; other values are not ours

    for name, raw in (overrides or {}).items():
        if raw is not None:
            values[name] = _coerce(fields[name], raw, f"--{name.replace('_', '-')}")

    settings = Settings(**values)
    _validate(settings)
    if not settings.access_token_secret:
        settings = dataclasses.replace(settings, access_token_secret=DEV_SECRET)
    return settings


def _require(condition: bool, setting: str, message: str) -> None:
    if not condition:
        raise ConfigError(setting, message)


def _validate(s: Settings) -> None:
    env_of = {spec.name: spec.metadata["env"] for spec in dataclasses.fields(Settings)}
    _require(0 < s.port < 65536, "PORT", f"must be 1-65535, got {s.port}")
    _require(0 <= s.health_port < 65536, "TORNCHAT_HEALTH_PORT",
             f"must be 0 (off) or 1-65535, got {s.health_port}")
    _require(s.health_port != s.port, "TORNCHAT_HEALTH_PORT",
             f"must differ from PORT ({s.port}), or be 0 (off)")
    _require(s.env in ("development", "production"), "TORNCHAT_ENV",
             f"must be development or production, got {s.env!r}")
    _require(s.demo in DEMO_MODES, "TORNCHAT_DEMO",
             f"must be 1 (on), 0 (off) or auto (on in development), got {s.demo!r}")
    _require(s.log_level.lower() in LOG_LEVELS, "LOG_LEVEL",
             f"must be one of {', '.join(LOG_LEVELS)}, got {s.log_level!r}")
    _require(s.log_format in LOG_FORMATS, "TORNCHAT_LOG_FORMAT",
             f"must be one of {', '.join(LOG_FORMATS)}, got {s.log_format!r}")
    _validate_database_url(s.database_url)
    if s.redis_url:
        scheme = urlsplit(s.redis_url).scheme
        _require(scheme in REDIS_SCHEMES, "REDIS_URL",
                 "must start with redis://, rediss://, unix://, or redis+cluster:// "
                 f"(rediss+cluster://) for a Redis Cluster, got {s.redis_url!r}")
        if scheme in CLUSTER_SCHEMES:
            _require(bool(urlsplit(s.redis_url).hostname), "REDIS_URL",
                     "a cluster URL names one node, e.g. redis+cluster://10.0.0.5:7000/")
            _require(urlsplit(s.redis_url).path.strip("/") in ("", "0"), "REDIS_URL",
                     "a Redis Cluster has database 0 only: drop the /N from the URL")
            _require(s.bus_mode == "routed", "TORNCHAT_BUS_MODE",
                     "must be routed with a Redis Cluster (pattern mode would send every "
                     "message to every node of the cluster)")
    if s.kafka_broker:
        _require("://" not in s.kafka_broker and ":" in s.kafka_broker, "KAFKA_BROKER",
                 f"must be host:port[,host:port], got {s.kafka_broker!r}")
    for name in ("kafka_publish_timeout", "outbox_poll_interval"):
        _require(getattr(s, name) > 0, env_of[name], "must be greater than 0")
    _require(s.outbox_batch_size >= 1, "TORNCHAT_OUTBOX_BATCH_SIZE", "must be at least 1")
    _require(s.outbox_retention_hours >= 0, "TORNCHAT_OUTBOX_RETENTION_HOURS",
             "must be 0 or more")
    _require(s.processes >= 0, "TORNCHAT_PROCESSES", "must be 0 (one per CPU) or more")
    _require(s.bus_mode in BUS_MODES, "TORNCHAT_BUS_MODE",
             f"must be one of {', '.join(BUS_MODES)}, got {s.bus_mode!r}")
    _require(s.order_hold >= 0, "TORNCHAT_ORDER_HOLD", "must be 0 or more")
    _require(1 <= s.writer_threads <= 8, "TORNCHAT_WRITER_THREADS", "must be 1 to 8")
    _require(s.stage_timing in (0, 1), "TORNCHAT_STAGE_TIMING", "must be 0 or 1")
    _require(0 <= s.sync_hold <= 10, "TORNCHAT_SYNC_HOLD", "must be from 0 to 10 seconds")
    _require(s.max_outbound_bytes >= 65536, "TORNCHAT_MAX_OUTBOUND_BYTES",
             "must be at least 65536 (64 KiB)")
    _require(0 <= s.presence_grace <= 3600, "TORNCHAT_PRESENCE_GRACE",
             "must be from 0 to 3600 seconds")
    for name in ("auth_timeout", "heartbeat_interval", "shutdown_timeout", "rate_limit_per_second",
                 "redis_probe_interval"):
        _require(getattr(s, name) > 0, env_of[name], "must be greater than 0")
    for name in ("max_connections_per_user", "max_pending_connections", "listen_backlog",
                 "max_message_length", "max_frame_bytes", "max_recipients", "rate_limit_burst",
                 "db_pool_size", "bus_backlog", "sync_max_conversations", "sync_max_replay"):
        _require(getattr(s, name) >= 1, env_of[name], "must be at least 1")
    _require(s.api_key == s.api_key.strip(), "TORNCHAT_API_KEY",
             "must not start or end with white space (HTTP headers cannot carry it)")
    _require(not s.api_key or len(s.api_key.encode()) >= MIN_PRODUCTION_SECRET_BYTES,
             "TORNCHAT_API_KEY", f"must be at least {MIN_PRODUCTION_SECRET_BYTES} bytes "
             "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if s.is_production:
        _require(bool(s.access_token_secret), "ACCESS_TOKEN_SECRET",
                 "is required when TORNCHAT_ENV=production")
        _require(len(s.access_token_secret.encode()) >= MIN_PRODUCTION_SECRET_BYTES,
                 "ACCESS_TOKEN_SECRET",
                 f"must be at least {MIN_PRODUCTION_SECRET_BYTES} bytes in production")


def _validate_database_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        _require(bool(parts.path.lstrip("/")), "DATABASE_URL",
                 f"sqlite URL needs a file path, e.g. sqlite:///tornchat.db, got {url!r}")
        _require(":memory:" not in url, "DATABASE_URL",
                 "an in-memory SQLite database is not shared between threads; use a file")
        return
    _require(parts.scheme in ("postgres", "postgresql"), "DATABASE_URL",
             f"must start with sqlite:/// or postgresql://, got {url!r}")
    _require(bool(parts.hostname) and bool(parts.path.strip("/")), "DATABASE_URL",
             "postgresql URL needs a host and a database name, e.g. "
             "postgresql://user:pass@localhost:5432/chat")


#: how --help shows a default that is not simply its value
_SHOWN_DEFAULTS: Mapping[str, str] = MappingProxyType({
    "access_token_secret": "a built-in development secret",
})


def _shown_default(spec: dataclasses.Field[Any]) -> str:
    if spec.name in _SHOWN_DEFAULTS:
        return _SHOWN_DEFAULTS[spec.name]
    value = spec.default
    if value == "" or value == ():
        return "unset"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def describe_settings() -> list[tuple[str, str, str, str]]:
    """(environment variable, TOML key, default as a person reads it, meaning)
    rows, for --help: every setting, and the two variables that are not
    settings themselves (the config file, the seed's ``NODE_ENV``)."""
    return [
        ("TORNCHAT_CONFIG", "", "unset", "a TOML file of the settings below (as --config)"),
        *((spec.metadata["env"], spec.name, _shown_default(spec), spec.metadata["doc"])
          for spec in dataclasses.fields(Settings)),
        ("NODE_ENV", "", "unset", "the seed's name for TORNCHAT_ENV, read when that is unset"),
    ]
