"""History and list benchmark: ``python -m loadtest.history_bench [--conversations 2000]``.

What a client reads back, on PostgreSQL, from a real ``tornchat serve``:
one user in ``--conversations`` conversations (2,000) and one conversation of
``--big`` messages (100,000). Reported, as p50 / p99 over ``--requests``
calls each, one at a time over a kept-alive connection:

- ``GET /api/v1/conversations?limit=20``, the first page and a deep one
  (a cursor past nearly all of the user's conversations);
- ``GET …/messages?limit=50`` of the big conversation, the newest and
  ``beforeSeq`` deep in the past;
- a ``sync`` of 50 conversations with 20 missed messages each (1,000
  ``new_message`` frames), from sending it to ``sync_done``.

The data is written straight into the database with set-based SQL (what is
measured is reading it back). Targets (issue: history, sync and read state):
each HTTP call p50 <= 5 ms, the sync <= 20 ms, on this 2-core machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import tempfile
import time
from collections.abc import Callable

import psycopg2

from harness.rawws import client_frame, upgrade_request
from harness.server import TEST_SECRET, ServerProcess
from harness.services import POSTGRES_ADMIN_DSN, fresh_postgres_database, migrated
from tornchat.auth import mint_token

USER = "bench-reader"
SYNCED, MISSED, SYNC_DEPTH = 50, 20, 40


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.history_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=2000,
                        help="conversations the reading user is in")
    parser.add_argument("--big", type=int, default=100_000,
                        help="messages of the one big conversation")
    parser.add_argument("--requests", type=int, default=200, help="calls per figure")
    parser.add_argument("--postgres", default=POSTGRES_ADMIN_DSN,
                        help="admin DSN; a fresh database is created and dropped")
    return parser


def populate(dsn: str, conversations: int, big: int) -> str:
    """The data set, with set-based SQL; returns the big conversation's id."""
    now = "timezone('utc', now())"
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO conversation (id, participant_key, created_at, updated_at, "
            f"last_message_at, last_seq) SELECT 'c_bench_' || g, md5('k' || g), {now}, {now}, "
            f"{now} - g * interval '1 second', CASE WHEN g <= %s THEN %s ELSE 3 END "
            "FROM generate_series(1, %s) AS g", (SYNCED, SYNC_DEPTH, conversations))
        cursor.execute(
            "INSERT INTO participant (id, user_id, conversation_id, joined_at, last_read_at, "
            f"last_read_seq) SELECT 'p_r_' || g, %s, 'c_bench_' || g, {now}, {now}, 0 "
            f"FROM generate_series(1, %s) AS g UNION ALL SELECT 'p_o_' || g, 'peer-' || g, "
            f"'c_bench_' || g, {now}, {now}, 0 FROM generate_series(1, %s) AS g",
            (USER, conversations, conversations))
        cursor.execute(
            "INSERT INTO message (id, conversation_id, sender_id, content, created_at, seq) "
            f"SELECT 'm_' || g || '_' || s, 'c_bench_' || g, 'peer-' || g, 'hello ' || s, "
            f"{now}, s FROM generate_series(1, %s) AS g, generate_series(1, %s) AS s "
            f"WHERE s <= CASE WHEN g <= %s THEN %s ELSE 3 END",
            (conversations, SYNC_DEPTH, SYNCED, SYNC_DEPTH))
        cursor.execute(
            "INSERT INTO conversation (id, participant_key, created_at, updated_at, "
            f"last_message_at, last_seq) VALUES ('c_big', md5('big'), {now}, {now}, "
            f"{now} - interval '1 day', %s)", (big,))
        cursor.execute(
            "INSERT INTO participant (id, user_id, conversation_id, joined_at, last_read_at, "
            f"last_read_seq) VALUES ('p_big_r', %s, 'c_big', {now}, {now}, 0), "
            f"('p_big_o', 'big-peer', 'c_big', {now}, {now}, 0)", (USER,))
        cursor.execute(
            "INSERT INTO message (id, conversation_id, sender_id, content, created_at, seq) "
            "SELECT 'mb_' || s, 'c_big', 'big-peer', repeat('x', 80) || s, "
            f"{now} - (%s - s) * interval '1 second', s FROM generate_series(1, %s) AS s",
            (big, big))
    connection = psycopg2.connect(dsn)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    finally:
        connection.close()
    return "c_big"


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return (statistics.median(ordered),
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))])


def timed(calls: int, call: Callable[[], None]) -> tuple[float, float]:
    """p50 and p99 in ms of ``calls`` calls, after five to warm up."""
    for _ in range(5):
        call()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)


class Http:
    def __init__(self, port: int, token: str) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self._headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> dict:
        self._connection.request("GET", path, headers=self._headers)
        response = self._connection.getresponse()
        body = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {body}")
        return body


def deep_cursor(api: Http, conversations: int) -> str:
    """The cursor of a page past nearly every conversation (the last one
    that still has a page after it)."""
    page = api.get("/api/v1/conversations?limit=20")
    cursor, seen = page["nextCursor"], len(page["conversations"])
    assert cursor is not None, "too few conversations for a deep page"
    while seen < conversations - 40:
        page = api.get(f"/api/v1/conversations?limit=20&cursor={cursor}")
        seen += len(page["conversations"])
        if page["nextCursor"] is None:
            break
        cursor = page["nextCursor"]
    return cursor


def _frames(buffer: bytes) -> tuple[int, bytes | None]:
    """(whole server frames in ``buffer``, the payload of the last one)."""
    count, pos, last = 0, 0, None
    while len(buffer) - pos >= 2:
        size, start = buffer[pos + 1] & 0x7F, pos + 2
        if size == 126:
            size, start = int.from_bytes(buffer[pos + 2:pos + 4], "big"), pos + 4
        elif size == 127:
            size, start = int.from_bytes(buffer[pos + 2:pos + 10], "big"), pos + 10
        if start + size > len(buffer):
            break
        count, last, pos = count + 1, buffer[start:start + size], start + size
    return count, last


def sync_timings(port: int, token: str, rounds: int) -> tuple[float, float]:
    """p50 and p99 in ms from sending the sync to receiving its ``sync_done``.

    Each round on a new authenticated connection (a connection never gets a
    message twice, so a second sync on it would replay nothing), the
    handshake not timed. The client reads raw bytes and only counts frames,
    so what is timed is the server, not a client library's parser.
    """
    known = {f"c_bench_{g}": SYNC_DEPTH - MISSED for g in range(1, SYNCED + 1)}
    frame = client_frame(json.dumps({"type": "sync", "conversations": known}).encode())
    samples = []
    for round_ in range(rounds + 2):  # two to warm up
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(upgrade_request("127.0.0.1", port, "/api/v1/chat"))
            sock.sendall(client_frame(json.dumps({"type": "auth", "token": token}).encode()))
            buffer = b""
            while b"auth_success" not in buffer:
                buffer += sock.recv(65536)
            started = time.perf_counter()
            sock.sendall(frame)
            buffer = b""
            while True:
                buffer += sock.recv(1 << 20)
                count, last = _frames(buffer)
                if last is not None and b'"sync_done"' in last[:24]:
                    break
            elapsed = (time.perf_counter() - started) * 1000
        if count != SYNCED * MISSED + 1:
            raise RuntimeError(f"sync sent {count} frames, not {SYNCED * MISSED} + sync_done")
        if round_ >= 2:
            samples.append(elapsed)
    return percentiles(samples)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with fresh_postgres_database(args.postgres, prefix="tornchat_history",
                                 for_test=False) as url:
        dsn = migrated(url)
        conversation = populate(dsn, args.conversations, args.big)
        with tempfile.TemporaryDirectory() as workdir:
            server = ServerProcess(cwd=workdir, env={"DATABASE_URL": dsn,
                                                     "LOG_LEVEL": "warning"}).start()
            try:
                token = mint_token(TEST_SECRET, USER)
                api = Http(server.port, token)
                cursor = deep_cursor(api, args.conversations)
                rows = [
                    ("GET /conversations?limit=20 (first page)",
                     timed(args.requests, lambda: api.get("/api/v1/conversations?limit=20"))),
                    ("GET /conversations?limit=20 (deep page)", timed(
                        args.requests,
                        lambda: api.get(f"/api/v1/conversations?limit=20&cursor={cursor}"))),
                    ("GET …/messages?limit=50 (newest)", timed(
                        args.requests,
                        lambda: api.get(f"/api/v1/conversations/{conversation}/messages"
                                        "?limit=50"))),
                    ("GET …/messages?limit=50&beforeSeq deep", timed(
                        args.requests,
                        lambda: api.get(f"/api/v1/conversations/{conversation}/messages"
                                        f"?limit=50&beforeSeq={max(2, args.big // 100)}"))),
                    (f"sync of {SYNCED} conversations x {MISSED} missed",
                     sync_timings(server.port, token, max(10, args.requests // 10))),
                ]
            finally:
                server.stop()
    print(f"history and lists on PostgreSQL: one user in {args.conversations:,} "
          f"conversations, one conversation of {args.big:,} messages; "
          f"p50 / p99 over {args.requests} calls (sync: {max(10, args.requests // 10)})")
    print("| call | p50 ms | p99 ms |")
    print("| --- | --- | --- |")
    for name, (p50, p99) in rows:
        print(f"| {name} | {p50:.2f} | {p99:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
