"""The side-by-side benchmark: ``python -m loadtest.bench [--quick] [--out DIR]``.

It starts everything itself (a private redis-server, a fresh PostgreSQL
database per tornchat run, the servers) and drives them with open-loop load
from several asyncio client processes (:mod:`loadtest.loadgen`). In order:

1. ``trivial``: the load generator against :mod:`loadtest.trivial_server`,
   which gives the generator's own ceiling on this machine;
2. ``tornchat-1w`` and ``tornchat-2w``: ``tornchat serve --processes 1|2``
   with PostgreSQL, the Redis bus and the outbox (a Kafka relay only with
   ``--kafka-broker``); if ``--processes 2`` does not give two Redis-connected
   workers yet, the run says so and carries on;
3. ``node-seed-2w``: the seed's design in Node.js (``loadtest/peer_node``:
   ws, pg, ioredis; installed with ``npm ci`` when Node.js is present);
4. ``socketio-2p``: the python-socketio peer (:mod:`loadtest.peer_socketio`).

For each system: idle authenticated connections and RSS per connection, the
fixed-rate latency (median of ``--repeats`` runs), and a rate sweep up to the
point where p99 exceeds ``--p99-limit-ms``. Writes ``results.json``,
``results.md`` and ``latency.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loadtest import report
from loadtest.runner import SYSTEMS, Bench

BEGIN_MARK, END_MARK = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"
REPO = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench", description=__doc__.split("\n\n")[0],
        epilog="Needs PostgreSQL (--postgres) and redis-server on PATH (or --redis-url).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="short steps and fewer connections: finishes in under 2 minutes")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output directory")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma list out of {', '.join(SYSTEMS)}")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="load-generator processes")
    parser.add_argument("--groups", type=int, default=None,
                        help="group conversations (default 100, quick 40)")
    parser.add_argument("--group-size", type=int, default=11,
                        help="members per group: 1 sender + N-1 recipients")
    parser.add_argument("--fixed-rate", type=float, default=1000.0,
                        help="messages/s of the fixed-rate latency run")
    parser.add_argument("--repeats", type=int, default=None,
                        help="fixed-rate runs per system, median reported (default 3, quick 1)")
    parser.add_argument("--idle-per-worker", type=int, default=None,
                        help="idle connections per server worker (default 10000, quick 1000)")
    parser.add_argument("--p99-limit-ms", type=float, default=50.0,
                        help="the sweep's p99 ceiling for 'sustained'")
    parser.add_argument("--postgres", default=os.environ.get(
        "TORNCHAT_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
                        help="admin DSN; a fresh database is created and dropped per run")
    parser.add_argument("--redis-url", default=None,
                        help="use this Redis instead of starting a private redis-server")
    parser.add_argument("--update-docs", action="store_true",
                        help="write the table into docs/performance.md and README.md "
                             f"between the {BEGIN_MARK!r} / {END_MARK!r} markers")
    parser.add_argument("--bus-mode", choices=("pattern", "routed"), default=None,
                        help="TORNCHAT_BUS_MODE for tornchat (default: the service's)")
    parser.add_argument("--store-sweep", action="store_true",
                        help="also sweep 1-to-1 chats for the stored msg/s figure in --quick "
                             "mode (a full run always does)")
    parser.add_argument("--profile", action="store_true",
                        help="also sample each tornchat worker with py-spy under the "
                             "fixed-rate load and report the dominant functions")
    parser.add_argument("--kafka-broker", default="tansu",
                        help="KAFKA_BROKER for tornchat's outbox relay: host:port, 'tansu' "
                             "to start a private in-memory broker, or 'none' (events stay "
                             "in the outbox table)")
    return parser


def write_outputs(results: dict[str, Any], out: Path) -> dict[str, Path]:
    paths = {"json": out / "results.json", "markdown": out / "results.md",
             "plot": out / "latency.png"}
    paths["json"].write_text(json.dumps(results, indent=2, default=str))
    paths["markdown"].write_text(report.render_markdown(results))
    report.plot(results, paths["plot"])
    return paths


def update_docs(markdown: str, files: tuple[Path, ...] = (REPO / "docs" / "performance.md",
                                                      REPO / "README.md")) -> list[Path]:
    """Replace the text between the result markers of each file that has them."""
    updated = []
    for path in files:
        if not path.exists():
            continue
        text = path.read_text()
        begin, end = text.find(BEGIN_MARK), text.find(END_MARK)
        if begin < 0 or end < begin:
            continue
        path.write_text(f"{text[:begin + len(BEGIN_MARK)]}\n{markdown}{text[end:]}")
        updated.append(path)
    return updated


@contextlib.contextmanager
def _logger() -> Iterator[Callable[[str], None]]:
    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {line}", flush=True)

    yield log


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _logger() as log:
        results = Bench(args, log).run()
        paths = write_outputs(results, args.out)
        print()
        print(paths["markdown"].read_text())
        log("wrote " + ", ".join(str(path) for path in paths.values()))
        if args.update_docs:
            changed = update_docs(paths["markdown"].read_text())
            log("updated " + (", ".join(str(path) for path in changed) or "no file (markers?)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
