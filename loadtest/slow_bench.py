"""Slow-consumer benchmark: ``python -m loadtest.slow_bench [--rounds 3]``.

Does a member who stops reading slow down the rest of its group? One
``tornchat serve`` (SQLite, one worker); each run is a fresh group
(:mod:`loadtest.grouprun`: 1 sender and 9 readers, 200 messages a second of
12,000 bytes, 6 s). Run A has only readers; run B adds one member whose
socket stops reading after authenticating (a tiny receive buffer, never read
again). A and B alternate ``--rounds`` times. Reported per run: the readers'
send-to-receive latency p50 / p99, how many connections were closed with
4008, and the server's RSS; then the medians and the B/A ratio.

Target (issue: hardening): the readers' p99 in B within 1.5x of A; the
server's memory bounded by TORNCHAT_MAX_OUTBOUND_BYTES per stalled
connection (1 MiB by default) plus what the kernel buffers for it.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile

from harness.rawws import unread_client
from harness.server import TEST_SECRET, ServerProcess
from loadtest.grouprun import (
    GroupLoad,
    Result,
    add_load_arguments,
    compare,
    metric,
    new_users,
    run_group,
    show,
)
from tornchat.auth import mint_token


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.slow_bench",
                                     description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, size=12000)
    return parser


async def one_run(server: ServerProcess, load: GroupLoad, stall: bool) -> Result:
    users = new_users(load.members)
    stalled_user = users[0] + "-stalled"
    stalled = (await unread_client("127.0.0.1", server.port,
                                   mint_token(TEST_SECRET, stalled_user)) if stall else None)
    closed_before = metric(server, "tornchat_slow_consumers_closed_total")
    result: Result = {"run": "B (one stalled)" if stall else "A (all read)"}
    result.update(await run_group(server, load, users, [stalled_user] if stall else []))
    if stalled is not None:
        result["closed_4008"] = metric(server, "tornchat_slow_consumers_closed_total") \
            - closed_before
        stalled.close()
    return result


async def main(args: argparse.Namespace) -> None:
    directory = tempfile.mkdtemp(prefix="slow-bench-")
    server = ServerProcess(cwd=directory, env={
        "DATABASE_URL": f"sqlite:///{directory}/chat.db", "LOG_LEVEL": "warning",
        "TORNCHAT_MAX_MESSAGE_LENGTH": str(args.size + 100),
        "TORNCHAT_RATE_LIMIT_PER_SECOND": "100000", "TORNCHAT_RATE_LIMIT_BURST": "100000",
        "TORNCHAT_HEARTBEAT_INTERVAL": "60"}).start()
    load = GroupLoad.from_args(args)
    results: list[Result] = []
    try:
        for _ in range(args.rounds):
            for stall in (False, True):
                results.append(await one_run(server, load, stall))
                show(results[-1])
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    loud = [r for r in results if str(r["run"]).startswith("B")]
    compare([r for r in results if str(r["run"]).startswith("A")], loud)
    print("closed with 4008 per B run:", [r.get("closed_4008") for r in loud])
    print("peak RSS growth in B (MB):", [round(float(r["rss_growth_mb"]), 1) for r in loud])


if __name__ == "__main__":
    asyncio.run(main(build_parser().parse_args()))
