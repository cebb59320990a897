"""Reconnect-storm benchmark: ``python -m loadtest.storm_bench [--clients 4000]``.

The other side of the flood defence (:mod:`tornchat.server.acceptgate`): when
a worker restarts, its users come back at once, and every one of them
authenticates within milliseconds. How long until all of them are back?
One ``tornchat serve`` (SQLite, one worker, the default limits); two child
processes (at the lowest CPU priority, like the flooders of
:mod:`loadtest.flood_bench`) open ``--clients`` WebSocket connections
between them, each a different user, at moments spread evenly over
``--spread`` seconds (the JavaScript client's first reconnect waits a
full-jitter backoff of up to 0.5 s), and send ``auth`` at once. Reported per
round: the seconds from the first connect to the last ``auth_success``, each
client's time from its own start to ``auth_success`` (p50, p99, max), the
clients that failed, and the worker's refused upgrades and accept pauses.
Rounds are :data:`tornchat.server.acceptgate.CROWDED_FOR` apart, so that
each storm meets a worker that is not crowded yet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
import uuid
from multiprocessing.connection import Connection

from harness.rawws import RawWebSocket
from harness.server import TEST_SECRET, ServerProcess
from loadtest.flood_bench import REFUSED
from loadtest.grouprun import metric
from loadtest.loadgen import raise_fd_limit
from tornchat.auth import mint_token
from tornchat.server.acceptgate import CROWDED_FOR

CLIENT_PROCESSES = 2
PAUSES = "tornchat_accept_pauses_total"
TIMEOUT = 60.0  # seconds a client waits for auth_success
NAN = float("nan")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.storm_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4000, help="clients per storm")
    parser.add_argument("--spread", type=float, default=0.5,
                        help="seconds over which the clients start")
    parser.add_argument("--rounds", type=int, default=3, help="storms, one after the other")
    parser.add_argument("--listen-backlog", type=int, default=0,
                        help="TORNCHAT_LISTEN_BACKLOG for the server (default: its own)")
    return parser


async def _storm(port: int, tokens: list[str], spread: float,
                 begin: float) -> list[tuple[float, float]]:
    """Each client's seconds from its start to auth_success, and when that
    came (time.time()); NaN for a client that failed."""
    url = f"ws://127.0.0.1:{port}/api/v1/chat"
    clients: list[RawWebSocket] = []

    async def one(index: int, token: str) -> tuple[float, float]:
        start = begin + spread * index / len(tokens)
        await asyncio.sleep(max(0.0, start - time.time()))
        start = time.time()
        try:
            client = await RawWebSocket.connect(url, timeout=TIMEOUT)
            clients.append(client)
            client.send_text(json.dumps({"type": "auth", "token": token}))
            reply = json.loads(await client.recv(TIMEOUT))
        except (OSError, TimeoutError, ValueError):
            return NAN, NAN
        if reply.get("type") != "auth_success":
            return NAN, NAN
        now = time.time()
        return now - start, now

    results = await asyncio.gather(*(one(n, token) for n, token in enumerate(tokens)))
    for client in clients:
        client.close()
    return list(results)


def _client_process(port: int, tokens: list[str], spread: float, begin: float,
                    out: Connection) -> None:
    os.nice(19)
    raise_fd_limit()
    out.send(asyncio.run(_storm(port, tokens, spread, begin)))


def one_storm(server: ServerProcess, clients: int, spread: float) -> dict[str, float]:
    tag = uuid.uuid4().hex[:6]
    tokens = [mint_token(TEST_SECRET, f"storm-{tag}-{n}") for n in range(clients)]
    refused, pauses = metric(server, REFUSED), metric(server, PAUSES)
    begin = time.time() + 1.0  # the children are running by then
    pipes, processes = [], []
    try:
        for part in range(CLIENT_PROCESSES):
            receive, send = multiprocessing.Pipe(duplex=False)
            process = multiprocessing.Process(target=_client_process, args=(
                server.port, tokens[part::CLIENT_PROCESSES], spread, begin, send))
            process.start()
            send.close()  # the child's end: a child that dies is an EOF here, not a hang
            pipes.append(receive)
            processes.append(process)
        results: list[tuple[float, float]] = []
        for receive in pipes:
            if not receive.poll(TIMEOUT + spread + 10):
                raise TimeoutError("a client process did not report")
            results.extend(receive.recv())
    finally:
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()
    done = [(took, at) for took, at in results if took == took]
    took = [each for each, _ in done]
    return {
        "all_back_s": max(at for _, at in done) - begin if done else NAN,
        "p50_s": statistics.median(took) if took else NAN,
        "p99_s": statistics.quantiles(took, n=100)[98] if len(took) > 100 else NAN,
        "max_s": max(took) if took else NAN,
        "failed": float(len(results) - len(done)),
        "refused_503": metric(server, REFUSED) - refused,
        "accept_pauses": metric(server, PAUSES) - pauses,
    }


def main(args: argparse.Namespace) -> None:
    directory = tempfile.mkdtemp(prefix="storm-bench-")
    server = ServerProcess(cwd=directory, env={
        "DATABASE_URL": f"sqlite:///{directory}/chat.db", "LOG_LEVEL": "warning",
        **({"TORNCHAT_LISTEN_BACKLOG": str(args.listen_backlog)} if args.listen_backlog else {})}
    ).start()
    try:
        for round_ in range(args.rounds):
            if round_:
                time.sleep(CROWDED_FOR + 1)  # the last storm's crowd is over
            result = one_storm(server, args.clients, args.spread)
            print("  ".join(f"{key}={value:.2f}" for key, value in result.items()), flush=True)
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main(build_parser().parse_args())
