"""Where an idle connection's memory goes: ``python -m loadtest.memprobe``.

Runs one tornchat worker in this process (SQLite, in-memory bus), opens N
authenticated idle connections from a child process, and reports the RSS
and Python heap added per connection, with the allocating source lines that
hold the most (``tracemalloc``). docs/performance.md ("Idle memory") is
built from its output; run it after any change to the connection path.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import tempfile
import tracemalloc
from multiprocessing.synchronize import Event

import orjson

from harness.rawws import RawWebSocket
from tornchat.auth import mint_token
from tornchat.config import load_settings
from tornchat.server.wiring import build_application
from tornchat.storage.schema import migrate

SECRET = "memprobe-secret-that-is-long-enough-for-anything"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _clients(port: int, count: int, ready: Event, done: Event) -> None:
    """Child process: hold ``count`` authenticated connections until ``done``."""

    async def hold() -> None:
        held = []
        for n in range(count):
            client = await RawWebSocket.connect(f"ws://127.0.0.1:{port}/api/v1/chat")
            client.send_text(orjson.dumps(
                {"type": "auth", "token": mint_token(SECRET, f"idle-{n}")}).decode())
            await client.recv()
            held.append(client)
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, done.wait)

    asyncio.run(hold())


async def probe(count: int, port: int, top: int, trace: bool) -> None:
    directory = tempfile.mkdtemp(prefix="memprobe-")
    settings = load_settings(environ={
        "ACCESS_TOKEN_SECRET": SECRET, "PORT": str(port), "TORNCHAT_HOST": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{directory}/chat.db"})
    app = build_application(settings)
    migrate(app.store.database)
    await app.start()
    gc.collect()
    if trace:
        tracemalloc.start(4)
        before = tracemalloc.take_snapshot()
    rss_before = _rss_bytes()
    context = multiprocessing.get_context("fork")
    ready, done = context.Event(), context.Event()
    child = context.Process(target=_clients, args=(port, count, ready, done))
    child.start()
    while not ready.is_set():
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    gc.collect()
    print(f"{app.connection_count} idle authenticated connections: "
          f"{(_rss_bytes() - rss_before) / count:,.0f} bytes of RSS each")
    if trace:
        stats = tracemalloc.take_snapshot().compare_to(before, "lineno")
        heap = sum(stat.size_diff for stat in stats)
        print(f"Python heap: {heap / count:,.0f} bytes each; the largest holders:")
        for stat in stats[:top]:
            where = stat.traceback[0]
            print(f"  {stat.size_diff / count:7,.0f} B  {where.filename}:{where.lineno}")
    done.set()
    child.join()
    await app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--port", type=int, default=18999)
    parser.add_argument("--top", type=int, default=25, help="allocating lines to list")
    parser.add_argument("--rss-only", action="store_true",
                        help="skip tracemalloc (it adds its own memory to the RSS)")
    args = parser.parse_args()
    asyncio.run(probe(args.connections, args.port, args.top, not args.rss_only))


if __name__ == "__main__":
    main()
