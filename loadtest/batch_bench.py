"""What one group-commit batch costs: ``python -m loadtest.batch_bench [--sizes 1,4,16]``.

Not a test. The store's own batch write (``ChatStore.store_batch``, the call
the writer thread makes) on a fresh PostgreSQL database, 50 conversations of
10 members, one message per conversation in turn; no server, no Redis, no
load generator. For each batch size it prints, as medians over ``--repeats``
runs of ``--batches`` batches: the wall time per batch, the CPU the calling
thread spent ("writer CPU", what the group-commit writer thread would
spend: ``time.thread_time`` over building the batch, encoding it, psycopg2
and libpq) and the CPU the PostgreSQL backend spent (its ``/proc`` counters,
Linux only; resolution one clock tick, so keep the runs long).

For a before/after comparison run it twice, once with ``PYTHONPATH`` set to
the other checkout, alternating (``cd /tmp && PYTHONPATH=../before python -m
loadtest.batch_bench``): the machine's noise moves both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from harness.services import fresh_postgres_database, migrated
from tornchat.storage.database import open_database
from tornchat.storage.store import ChatStore, NewMessage

_TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) process ``pid`` has used."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", default="1,4,16", help="comma list of messages per batch")
    parser.add_argument("--batches", type=int, default=1500, help="batches per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per size; medians")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="admin DSN; a fresh database is made and dropped")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    with fresh_postgres_database(args.postgres, prefix="tornchat_batch", for_test=False) as url:
        store = ChatStore(open_database(migrated(url), 2))
        try:
            conversations = []
            for group in range(50):
                members = tuple(sorted(f"u{group}_{member}" for member in range(10)))
                conversations.append(
                    (store.find_or_create_conversation(frozenset(members)), members))
            cid, members = conversations[0]
            store.store_batch([NewMessage(members[0], cid, members, "warm-up")])
            [(pid,)] = store.database.execute_sql("SELECT pg_backend_pid()").fetchall()
            print(f"{store.dialect.__module__}: {args.batches} batches x {args.repeats} runs "
                  "per size, medians per batch", flush=True)
            print("| messages per batch | wall ms | writer CPU µs | PostgreSQL CPU µs |")
            print("| --- | --- | --- | --- |")
            for size in sizes:
                walls, clients, backends = [], [], []
                for _ in range(args.repeats):
                    wall, client, backend = time.perf_counter(), time.thread_time(), \
                        backend_cpu(pid)
                    for number in range(args.batches):
                        batch = []
                        for index in range(size):
                            cid, members = conversations[(number * size + index) % 50]
                            batch.append(NewMessage(members[index % 10], cid, members,
                                                    f"a message of modest length, {number}"))
                        store.store_batch(batch)
                    walls.append((time.perf_counter() - wall) / args.batches * 1e3)
                    clients.append((time.thread_time() - client) / args.batches * 1e6)
                    backends.append((backend_cpu(pid) - backend) / args.batches * 1e6)
                print(f"| {size} | {statistics.median(walls):.3f} | "
                      f"{statistics.median(clients):.0f} | {statistics.median(backends):.0f} |",
                      flush=True)
        finally:
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
