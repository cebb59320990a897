"""``python -m loadtest.looplag FILE serve ...``: ``tornchat serve`` whose
workers write how late their event loop ran to FILE.

A benchmark that sees users' messages arrive late cannot tell from the
client side whether the server's loop stalled or something else did (the
measuring process, the kernel, the host). Here each worker runs a timer
every :data:`PERIOD` seconds on its loop and appends one line
``<unix time> <ms late> <pid>`` for every tick more than :data:`REPORTED`
late, and one ``<unix time> start <pid>`` line when it begins. A stall of
the loop shows up as a late tick within one period of its start.

Relies on :func:`tornchat.server.lifecycle.run_worker` calling
``settle_collector`` on the worker's loop once the application has started
(the hook this wraps); ``tests/loadtest/test_looplag.py`` fences it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from typing import TextIO

PERIOD = 0.002  # seconds between ticks
REPORTED = 0.001  # seconds late before a tick is written down


def _watch(out: TextIO) -> None:
    loop = asyncio.get_running_loop()
    out.write(f"{time.time():.3f} start {os.getpid()}\n")
    due = loop.time() + PERIOD

    def tick() -> None:
        nonlocal due
        now = loop.time()
        if now - due > REPORTED:
            out.write(f"{time.time():.3f} {(now - due) * 1000:.1f} {os.getpid()}\n")
        due = now + PERIOD
        loop.call_at(due, tick)

    loop.call_at(due, tick)


def install(path: str) -> None:
    """Every worker started after this watches its loop, writing to ``path``."""
    from tornchat.server import lifecycle

    settle = lifecycle.settle_collector

    def settle_and_watch() -> None:
        settle()
        _watch(open(path, "a", buffering=1, encoding="ascii"))  # noqa: SIM115 (the worker's life)

    lifecycle.settle_collector = settle_and_watch


def lateness(path: str, start: float, end: float) -> Iterator[float]:
    """The lateness (ms) of the late ticks written between ``start`` and ``end`` (unix time)."""
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                when, late, _pid = line.split()
                if late != "start" and start <= float(when) <= end:
                    yield float(late)
    except FileNotFoundError:
        return


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        return 2
    install(sys.argv[1])
    from tornchat.cli import main as tornchat_main

    return tornchat_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
