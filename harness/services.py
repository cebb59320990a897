"""The machine's real PostgreSQL and Redis, for tests and benchmarks.

In CI (``CI=true``) a missing service or tool fails the test; on a laptop it
skips with the reason, so ``pytest`` still runs everything it can. pytest is
imported only at that moment, so the benchmarks do not need it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import NoReturn

import psycopg2

from harness.ports import port_open
from tornchat.storage.database import open_database
from tornchat.storage.schema import migrate

POSTGRES_ADMIN_DSN = os.environ.get("TORNCHAT_TEST_POSTGRES",
                                    "postgresql://postgres@127.0.0.1:5432/test")
REDIS_TEST_URL = os.environ.get("TORNCHAT_TEST_REDIS", "redis://127.0.0.1:6379/0")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Fail the running test in CI, skip it elsewhere."""
    import pytest

    if in_ci():
        pytest.fail(f"missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def require_redis() -> str:
    """The shared Redis's URL, or fail/skip the test when nothing listens."""
    if not port_open("127.0.0.1", 6379):
        unavailable("Redis is not listening on 127.0.0.1:6379")
    return REDIS_TEST_URL


@contextlib.contextmanager
def fresh_postgres_database(admin_dsn: str = POSTGRES_ADMIN_DSN, prefix: str = "tornchat_test",
                            for_test: bool = True) -> Iterator[str]:
    """Create an empty database for one test, module or benchmark run; drop it afterwards.

    An unreachable server fails/skips the test (:func:`unavailable`); with
    ``for_test=False`` (a benchmark) the connection error propagates instead.
    """
    try:
        admin = psycopg2.connect(admin_dsn, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        if for_test:
            unavailable(f"PostgreSQL is not reachable at {admin_dsn}: {exc}")
        raise
    admin.autocommit = True
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def migrated(database_url: str) -> str:
    """Bring the database at ``database_url`` to the current schema; returns the URL."""
    database = open_database(database_url, 1)
    try:
        migrate(database)
    finally:
        database.close()
    return database_url
