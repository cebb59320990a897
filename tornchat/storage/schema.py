"""Apply and inspect schema migrations (peewee's ``playhouse.migrations``).

On PostgreSQL the runner holds an advisory lock, so instances that start at
once (or a Helm hook racing a rolling pod) apply each migration exactly once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import peewee as pw
from playhouse.migrations import Runner

from tornchat.storage.database import is_sqlite

MIGRATIONS_DIR = str(Path(__file__).parent / "migrations")
_ADVISORY_LOCK_ID = 0x746F726E  # "torn"


def _runner(database: pw.Database) -> Runner:
    return Runner(database, directory=MIGRATIONS_DIR)


@contextlib.contextmanager
def _migration_lock(database: pw.Database) -> Iterator[None]:
    if is_sqlite(database):
        yield
        return
    database.execute_sql("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_ID,))
    try:
        yield
    finally:
        database.execute_sql("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_ID,))


def migrate(database: pw.Database) -> list[str]:
    """Apply pending migrations; returns the names applied (empty if current)."""
    with database.connection_context(), _migration_lock(database):
        return _runner(database).up()


def pending_migrations(database: pw.Database) -> list[str]:
    """Names of migrations not yet applied."""
    with database.connection_context():
        return [m.name for m in _runner(database).status() if m.path and not m.applied]
