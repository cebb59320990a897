"""SQLite: one writer at a time, local calls, text timestamps.

SQLite admits one writer per database file, so every write transaction
begins ``IMMEDIATE``: it takes the writer lock up front instead of upgrading
a read lock halfway (which could fail with "database is locked" after work
was done). That lock is also what keeps ``seq`` gap-free here: no other
transaction can advance a counter between a batch's reads and its commit.
Calls cost no round trip, so a batch is simply written statement by statement
(:meth:`Dialect._write_batch`).

Thread rule: blocking; runs off the IOLoop. A thread keeps its connection
open between units of work (there is no pool to hand it back to), and the
store's executor runs a single thread.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tornchat.storage.dialect import Dialect, DirectStatements, Statements

if TYPE_CHECKING:  # annotations only (the store imports this module)
    from tornchat.storage.store import NewMessage, StoreResult


class SqliteDialect(Dialect):
    keeps_connection = True

    def reader_threads(self, pool_size: int) -> int:
        """One: SQLite has a single writer lock, so more threads would only wait."""
        return 1

    def writer_threads(self, wanted: int) -> int:
        """One, for the same reason."""
        return 1

    def write_transaction(self) -> Any:
        return self.database.atomic(lock_type="IMMEDIATE")

    def insert_batch(self, batch: list[NewMessage]) -> list[StoreResult]:
        """The batch statement by statement in one ``IMMEDIATE`` transaction."""
        with self.write_transaction():
            return self._write_batch(batch, DirectStatements(self.database))

    def _reserve_seqs(self, counts: Counter[str], now: datetime, sql: Statements
                      ) -> dict[str, int]:
        """One UPDATE … RETURNING per conversation (one writer, local calls)."""
        param = self.database.param
        update = (f"UPDATE conversation SET last_seq = last_seq + {param}, "
                  f"last_message_at = {param}, updated_at = {param} "
                  f"WHERE id = {param} RETURNING id, last_seq")
        first: dict[str, int] = {}
        for cid in sorted(counts):
            for _, last in sql.query(update, (counts[cid], now, now, cid)):
                first[cid] = last - counts[cid] + 1
        return first

    def timestamp(self, value: Any) -> Any:
        """SQLite returns the stored text."""
        if isinstance(value, str):
            return datetime.fromisoformat(value)
        return value
