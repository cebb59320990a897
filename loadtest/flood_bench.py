"""Connection-flood benchmark: ``python -m loadtest.flood_bench [--flood 20000]``.

Do sockets that upgrade and never authenticate hurt the users who did? One
``tornchat serve`` (SQLite, one worker, TORNCHAT_MAX_PENDING_CONNECTIONS at
its default of 1,000); each run is a fresh chat group (:mod:`loadtest.grouprun`:
1 sender, 9 readers, 200 messages a second, 6 s). In run B, two child
processes open ``--flood`` WebSocket connections between them (20,000; two
because of the 20,000-descriptor limit per process here) that upgrade and
never send ``auth``, as fast as the server answers, during the whole run.
A and B alternate ``--rounds`` times; with ``--control``, each round also
has a run C between them whose flood goes to a listening socket that nobody
accepts from, so C costs what the flood costs this machine (the flooders'
processes, the kernel's handshakes, drops and retransmissions) and nothing
of the server: B/C is the server's own share. ``--split-cpus`` pins the
server to one CPU and the measuring process to the other, with the flooders
on either; ``--server-lag`` runs the server under :mod:`loadtest.looplag`
and reports how late its event loop ran in each run, its own stalls apart
from the machine's. Reported: the readers' p50 / p99, the
upgrades refused with 503, the server's peak RSS, and the packets the kernel
dropped and the TCP segments it sent again during the run (:func:`kernel_drops`).

Each run starts from a settled machine. A flood that outruns the server's
accept queue leaves thousands of client sockets whose handshake the server
never completed; closed normally, they linger as orphans in FIN-WAIT-1,
retransmitting their upgrade request in synchronised waves for a minute or
more (``ss -s``: 3,000-4,500 orphans after one B run). Those waves fell into
the next runs: quiet runs after a flood measured a p99 of 25-29 ms against
4 ms before it, and the second B run of every round was the worst. So the
flooders close their sockets with a reset (``SO_LINGER`` 0: no orphan), and
every run waits until the kernel counts no orphaned sockets
(``/proc/net/sockstat``), at most :data:`SETTLE_LIMIT` seconds.

Target (issue: hardening): the readers' p99 in B within 2x of A, and the
server's RSS bounded (about TORNCHAT_MAX_PENDING_CONNECTIONS times the cost
of one waiting connection).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import socket
import struct
import tempfile
import time

from harness.rawws import upgrade_request
from harness.server import ServerProcess
from loadtest import looplag
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
from loadtest.loadgen import raise_fd_limit

FLOODERS = 2
REFUSED = "tornchat_connections_refused_pending_total"
SPLITS = ("server-alone", "flood-with-server")  # --split-cpus
LISTEN_BACKLOG = 1024  # TORNCHAT_LISTEN_BACKLOG's default, for run C's listener
SETTLE_LIMIT = 120.0  # seconds a run waits for the last one's orphaned sockets
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends RST


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.flood_bench",
                                     description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, size=200)
    parser.add_argument("--flood", type=int, default=20000,
                        help="connections that never authenticate, per B run")
    parser.add_argument("--concurrency", type=int, default=5000,
                        help="connections each flooder has open or opening at once")
    parser.add_argument("--control", action="store_true",
                        help="add a run C per round, the same flood at a socket nobody accepts "
                             "from: what the flood costs this machine without the server")
    parser.add_argument("--split-cpus", choices=SPLITS, metavar="|".join(SPLITS),
                        help="the server on the first CPU, the measured users on the others; "
                             "the flooders with the server (flood-with-server: on loopback a "
                             "packet's receive work runs on the CPU that sent it, so the "
                             "flood's kernel work lands on the server's CPU, as on a real "
                             "server) or with the users (server-alone)")
    parser.add_argument("--server-lag", action="store_true",
                        help="report how late the server's event loop ran in each run "
                             "(loadtest.looplag): its own stalls, apart from the machine's")
    parser.add_argument("--connect-rate", type=float, default=0.0,
                        help="new connections a second, all flooders together "
                             "(default: as fast as the server answers)")
    return parser


async def _flood(port: int, count: int, seconds: float, concurrency: int,
                 rate: float) -> None:
    """Open ``count`` upgrades (``concurrency`` at a time) that never
    authenticate; keep each accepted one open until the server ends it or
    the run ends."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    request = upgrade_request("127.0.0.1", port, "/api/v1/chat")

    started = loop.time()

    async def one(index: int) -> None:
        if rate:
            await asyncio.sleep(max(0.0, started + index / rate - loop.time()))
        async with gate:
            sock = socket.socket()
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), seconds)
                await loop.sock_sendall(sock, request)
                while await asyncio.wait_for(loop.sock_recv(sock, 4096), seconds):
                    pass  # 101 then, after the auth timeout, the close; or 503 and EOF
            except (OSError, TimeoutError):
                pass
            finally:
                sock.close()

    await asyncio.gather(*(one(index) for index in range(count)))


def _flooder(port: int, count: int, seconds: float, concurrency: int, rate: float,
             cpus: set[int] | None = None) -> None:
    """A child process; at the lowest CPU priority, so that on this 2-core
    machine the flood competes with the server for its sockets, not for the
    CPU (an attacker's processes run on other machines); on ``cpus`` if given
    (``--split-cpus``)."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    os.nice(19)
    raise_fd_limit()
    asyncio.run(_flood(port, count, seconds, concurrency, rate))


def kernel_drops() -> dict[str, int]:
    """Packets the kernel dropped so far: ``softnet`` for a full per-CPU input
    backlog (``net.core.netdev_max_backlog``; on loopback every packet, the
    users' and the flood's alike, passes through it) and ``retransmits``, TCP
    segments sent again. A dropped data segment waits for a retransmission
    timer (a loss probe, or the 200 ms minimum RTO), which no server
    callback shows."""
    with open("/proc/net/softnet_stat", encoding="ascii") as handle:
        softnet = sum(int(line.split()[1], 16) for line in handle if line.strip())
    with open("/proc/net/snmp", encoding="ascii") as handle:
        tcp = [line.split() for line in handle if line.startswith("Tcp:")]
    retransmits = int(tcp[1][tcp[0].index("RetransSegs")])
    return {"softnet": softnet, "retransmits": retransmits}


def orphaned_sockets() -> int:
    """TCP sockets no process holds any more, still being closed by the kernel."""
    with open("/proc/net/sockstat", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("orphan") + 1])
    return 0


async def settle() -> float:
    """Wait until no orphaned socket is left (bounded); the seconds waited."""
    started = time.monotonic()
    while orphaned_sockets() and time.monotonic() - started < SETTLE_LIMIT:
        await asyncio.sleep(0.5)
    return time.monotonic() - started


def unaccepted_listener(backlog: int) -> socket.socket:
    """A listening socket on a free port that nobody accepts from: the target
    of run C. The kernel completes handshakes into its queue (``backlog``, as
    the server's) and drops the rest, as it does for a server that stopped
    accepting."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    return listener


async def one_run(server: ServerProcess, load: GroupLoad, flood: int,
                  args: argparse.Namespace, control: bool = False) -> Result:
    settled = await settle()
    listener = unaccepted_listener(LISTEN_BACKLOG) if control else None
    port = listener.getsockname()[1] if listener else server.port
    refused_before = metric(server, REFUSED)
    drops_before = kernel_drops()
    flooders = [multiprocessing.Process(target=_flooder,
                                        args=(port, flood // FLOODERS, load.seconds + 2,
                                              args.concurrency, args.connect_rate / FLOODERS,
                                              args.flooder_cpus))
                for _ in range(FLOODERS if flood else 0)]
    for process in flooders:
        process.start()
    result: Result = {"run": "C (the flood at a socket nobody accepts from)" if control
                      else f"B ({flood} never authenticate)" if flood else "A (quiet)"}
    started = time.time()
    result.update(await run_group(server, load, new_users(load.members)))
    if args.lag_file:
        late = list(looplag.lateness(args.lag_file, started, time.time()))
        result["server_lag_max_ms"] = max(late, default=0.0)
        result["server_lag_ms"] = sum(late)
    for process in flooders:
        process.join(30)
        if process.is_alive():
            process.kill()
    if listener:
        listener.close()
    result["refused_503"] = metric(server, REFUSED) - refused_before
    drops = kernel_drops()
    result["softnet_drops"] = float(drops["softnet"] - drops_before["softnet"])
    result["retransmits"] = float(drops["retransmits"] - drops_before["retransmits"])
    result["settled_s"] = settled
    return result


def server_cpu() -> tuple[set[int], set[int]]:
    """(the server's CPU, everyone else's) for ``--split-cpus``."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--split-cpus needs at least 2 CPUs")
    return {cpus[0]}, set(cpus[1:])


async def main(args: argparse.Namespace) -> None:
    split = server_cpu() if args.split_cpus else None
    args.flooder_cpus = (split[0] if args.split_cpus == "flood-with-server" else split[1]
                         ) if split else None
    directory = tempfile.mkdtemp(prefix="flood-bench-")
    args.lag_file = os.path.join(directory, "looplag") if args.server_lag else ""
    if split:  # the server inherits it, and every thread it starts
        os.sched_setaffinity(0, split[0])
    server = ServerProcess(cwd=directory, env={
        "DATABASE_URL": f"sqlite:///{directory}/chat.db", "LOG_LEVEL": "warning",
        "TORNCHAT_RATE_LIMIT_PER_SECOND": "100000", "TORNCHAT_RATE_LIMIT_BURST": "100000"},
        module=("loadtest.looplag", args.lag_file) if args.lag_file else ("tornchat.cli",)
    ).start()
    if split:
        os.sched_setaffinity(0, split[1])
    load = GroupLoad.from_args(args)
    results: list[Result] = []
    try:
        for _ in range(args.rounds):
            arms = [(0, False), (args.flood, True), (args.flood, False)]
            for flood, control in arms if args.control else arms[::2]:
                results.append(await one_run(server, load, flood, args, control))
                show(results[-1])
                await asyncio.sleep(6)  # the accepted ones time out (TORNCHAT_AUTH_TIMEOUT)
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    quiet, loud, machine = (
        [r for r in results if str(r["run"]).startswith(arm)] for arm in "ABC")
    compare(quiet, loud)
    if machine:
        compare(quiet, machine, ("A", "C"))
        compare(machine, loud, ("C", "B"))
    print("peak server RSS in B (MB):", [round(float(r["rss_mb"]), 1) for r in loud])


if __name__ == "__main__":
    asyncio.run(main(build_parser().parse_args()))
