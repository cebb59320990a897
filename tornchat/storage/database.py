"""Open a peewee database from ``DATABASE_URL``.

SQLite runs in WAL mode with a busy timeout (one writer thread is used for
it); PostgreSQL goes through psycopg2 with a connection pool sized by
``TORNCHAT_DB_POOL_SIZE``. Connections are opened lazily, after any fork.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import peewee as pw
from playhouse.pool import PooledPostgresqlDatabase

from tornchat.errors import StartupError

SQLITE_PRAGMAS = (
    ("journal_mode", "wal"),
    ("synchronous", "full"),  # an acknowledged message survives power loss too
    ("busy_timeout", 10_000),
    ("foreign_keys", 1),
)


def open_database(url: str, pool_size: int = 8, writers: int = 1) -> pw.Database:
    """A not-yet-connected database for ``url`` (validated by config): on
    PostgreSQL a pool of ``pool_size`` connections for readers plus one per
    group-commit writer thread."""
    path = sqlite_path(url)
    if path is not None:
        return pw.SqliteDatabase(path, pragmas=SQLITE_PRAGMAS, check_same_thread=False)
    parts = urlsplit(url)
    return PooledPostgresqlDatabase(
        unquote(parts.path.lstrip("/")),
        host=parts.hostname,
        port=parts.port or 5432,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        max_connections=pool_size + writers,  # the readers' executor plus the writers
        stale_timeout=300,
        timeout=10,
        connect_timeout=5,
        # A hung or partitioned server must surface as an error, not a stuck thread.
        options="-c statement_timeout=10000 -c idle_in_transaction_session_timeout=30000",
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
        autoconnect=True,
    )


@contextlib.contextmanager
def startup_database(url: str) -> Iterator[pw.Database]:
    """A one-connection database for a command's start-up work (migrations,
    the schema check, the outbox status), closed afterwards. A database that
    cannot be opened or reached (refused, unknown host, bad password, a file
    that cannot be created) becomes one readable :class:`StartupError`
    naming ``DATABASE_URL``, its password left out, instead of a driver
    traceback."""
    database = open_database(url, 1)
    try:
        try:
            database.connect(reuse_if_open=True)
        except pw.OperationalError as exc:  # only opening it: a failing statement stays itself
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StartupError(f"cannot use DATABASE_URL {shown_url(url)}: {reason}") from exc
        yield database
    finally:
        close_database(database)


def sqlite_path(url: str) -> str | None:
    """The file a ``sqlite:///`` URL names (``:memory:`` included); None for PostgreSQL."""
    parts = urlsplit(url)
    return unquote(parts.path[1:]) if parts.scheme == "sqlite" else None


def shown_url(url: str) -> str:
    """``url`` for a message: any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def is_sqlite(database: pw.Database) -> bool:
    return isinstance(database, pw.SqliteDatabase)


def close_connection(database: pw.Database) -> None:
    """Close this thread's connection (back to the pool on PostgreSQL); quiet."""
    with contextlib.suppress(Exception):
        if not database.is_closed():
            database.close()


def close_database(database: pw.Database) -> None:
    """Close this thread's connection and, for a pool, every idle one."""
    close_connection(database)
    if isinstance(database, PooledPostgresqlDatabase):
        with contextlib.suppress(Exception):
            database.close_all()
