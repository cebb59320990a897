"""The ``tornchat`` command: serve, migrate, token, healthcheck, events.

Every command reads the same settings (``--config`` file, environment, flags);
a bad setting prints one readable line naming the variable and exits 2, a
database that cannot be reached or a port that cannot be bound one line
saying so, exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from tornchat import __version__
from tornchat.auth import MAX_USER_ID_LENGTH, is_valid_user_id, mint_token
from tornchat.config import Settings, describe_settings, load_settings
from tornchat.errors import ConfigError, StartupError
from tornchat.events import cli as events_cli
from tornchat.storage.database import startup_database

DESCRIPTION = """\
tornchat: a real-time WebSocket chat service (Tornado, PostgreSQL/SQLite,
Redis pub/sub, Kafka events).

With nothing configured, `tornchat serve` runs on port 4004 with an embedded
SQLite file (./tornchat.db), an in-memory bus and a development JWT secret.
Clients connect to ws://HOST:PORT/api/v1/chat and send
{"type":"auth","token":"<JWT>"} within 5 seconds; `tornchat token alice`
prints a token to try it.
"""


def _settings_epilog() -> str:
    rows = "\n".join(f"  {env:<36} {doc} (default: {default})"
                     + (f"\n  {'':<36} file: {key}" if key else "")
                     for env, key, default, doc in describe_settings())
    return ("settings (environment variable, then the `key = value` name in the --config "
            f"TOML file):\n{rows}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tornchat", description=DESCRIPTION, epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tornchat {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", metavar="FILE",
                         help="TOML settings file (default: $TORNCHAT_CONFIG)")
        return sub

    serve = add("serve", "run the chat server until SIGTERM/SIGINT, then drain gracefully")
    serve.add_argument("--host", help="interface to bind (default 0.0.0.0, $TORNCHAT_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default 4004, $PORT)")
    serve.add_argument("--processes", type=int, metavar="N",
                       help="worker processes, 0 = one per CPU; more than 1 needs REDIS_URL "
                            "(default 1, $TORNCHAT_PROCESSES)")

    add("migrate", "create or upgrade the database schema (run before serve on PostgreSQL)")

    token = add("token", "print a signed JWT for USER_ID, for trying the service")
    token.add_argument("user_id", metavar="USER_ID", help="the user id (the token's sub claim)")
    token.add_argument("--ttl", type=int, default=3600, metavar="SECONDS",
                       help="lifetime of the token in seconds (default 3600)")

    check = add("healthcheck", "exit 0 if the server's /health answers 200 (for Docker)")
    check.add_argument("--url", help="health URL (default: /health on the settings' health "
                                     "port if set, else their port, and host, 127.0.0.1 "
                                     "when that is 0.0.0.0)")
    check.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")

    events_cli.add_parser(add)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name, None) for name in ("host", "port", "processes")}
    return load_settings(config_file=args.config, overrides=overrides)


def _cmd_serve(args: argparse.Namespace) -> int:
    from tornchat.server.lifecycle import serve
    from tornchat.server.logsetup import configure_logging

    settings = _settings(args)
    configure_logging(settings.log_level, settings.log_format)
    return serve(settings)


def _cmd_migrate(args: argparse.Namespace) -> int:
    from tornchat.storage.schema import migrate

    settings = _settings(args)
    with startup_database(settings.database_url) as database:
        applied = migrate(database)
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.ttl <= 0:
        raise ConfigError("--ttl", "must be a positive number of seconds")
    if not is_valid_user_id(args.user_id):
        raise ConfigError("USER_ID", f"must be 1 to {MAX_USER_ID_LENGTH} printable "
                          "characters (the server refuses a token for any other)")
    if settings.uses_dev_secret:
        print("warning: signing with the development secret (ACCESS_TOKEN_SECRET unset)",
              file=sys.stderr)
    print(mint_token(settings.access_token_secret, args.user_id, args.ttl))
    return 0


def health_url(settings: Settings) -> str:
    """Where this host's server answers ``/health``: the health port if there
    is one (a flood on the main port cannot delay it), else the main port; on
    loopback when the server binds every interface."""
    host = settings.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{settings.health_port or settings.port}/health"


def _cmd_healthcheck(args: argparse.Namespace) -> int:
    url = args.url or health_url(_settings(args))
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            body = json.loads(response.read() or b"{}")
            print(json.dumps(body))
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: {url}: HTTP {exc.code} {exc.read().decode(errors='replace')}",
              file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
    return 1


def _cmd_events(args: argparse.Namespace) -> int:
    return events_cli.run(args, _settings(args))


COMMANDS: Mapping[str, Callable[[argparse.Namespace], int]] = MappingProxyType({
    "serve": _cmd_serve, "migrate": _cmd_migrate, "token": _cmd_token,
    "healthcheck": _cmd_healthcheck, "events": _cmd_events})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"tornchat: configuration error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"tornchat: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
