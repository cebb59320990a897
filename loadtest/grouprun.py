"""One chat group under a fixed send rate, measured: what the A/B
benchmarks (``slow_bench``, ``flood_bench``) share.

A fresh group of ``members`` users (one sender, the rest readers on raw
sockets) in one conversation; the sender sends ``rate`` messages a second of
``size`` bytes, open loop, for ``seconds``, each carrying its send time, and
every reader records send-to-receive latency. The server's RSS is sampled
while it runs, and ``late_at`` lists the seconds into the run at which some
message took over 20 ms (where to look for a cause). ``client_stall_ms`` is
the longest this measuring process's own event loop was late (a 5 ms timer
overshooting): readers share that loop, so a stall there shows up as latency
the server did not cause. ``user_retransmits`` counts the TCP segments sent
again on the group's own connections, both ends (``ss``): one lost segment
of the sender's stream holds every later message for a retransmission
timeout (200 ms at least), which reads as server latency but is not. With
no drop anywhere a count means tail-loss probes: acknowledgements that came
late because the whole machine stalled.
``steal_ms`` is the CPU time the hypervisor gave to other guests while the
run sent (``steal`` in ``/proc/stat``, both cores together): on a shared
virtual machine a stall there is a stall of every process in it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from harness.rawws import RawWebSocket
from harness.server import TEST_SECRET, ServerProcess
from tornchat.auth import mint_token

Result = dict[str, float | str]

_STALL_TICK = 0.005  # seconds between the client's own loop-lag samples


class _StallProbe:
    """The measuring process's event-loop lag: the longest a short sleep overslept."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(_STALL_TICK)
            self.longest = max(self.longest, time.monotonic() - before - _STALL_TICK)

    def stop(self) -> float:
        """Stop sampling; the longest lag in milliseconds."""
        self._task.cancel()
        return self.longest * 1000


@dataclass(frozen=True)
class GroupLoad:
    members: int
    rate: float
    size: int
    seconds: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GroupLoad:
        return cls(args.members, args.rate, args.size, args.seconds)


def add_load_arguments(parser: argparse.ArgumentParser, size: int) -> None:
    parser.add_argument("--rounds", type=int, default=3, help="A/B pairs")
    parser.add_argument("--members", type=int, default=10, help="group size, sender included")
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second")
    parser.add_argument("--size", type=int, default=size, help="bytes of content")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each run")


async def authed(port: int, user: str) -> RawWebSocket:
    client = await RawWebSocket.connect(f"ws://127.0.0.1:{port}/api/v1/chat")
    client.send_text(json.dumps({"type": "auth", "token": mint_token(TEST_SECRET, user)}))
    reply = json.loads(await client.recv(10))
    assert reply["type"] == "auth_success", reply
    return client


def metric(server: ServerProcess, name: str) -> float:
    """A counter's value from the server's /metrics (0 if absent)."""
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def new_users(count: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"group-{tag}-{n}" for n in range(count)]


async def run_group(server: ServerProcess, load: GroupLoad, users: Sequence[str],
                    extra_recipients: Sequence[str] = ()) -> Result:
    """Send to ``users[1:]`` (and ``extra_recipients``, who are not measured)."""
    sender = await authed(server.port, users[0])
    latencies: list[float] = []
    late_at: list[float] = []
    wall_start = time.time()

    def on_text(text: str) -> None:
        if text.startswith('{"type":"new_message"'):
            sent = float(json.loads(text)["data"]["content"].split(" ", 1)[0])
            latencies.append(time.time() - sent)
            if latencies[-1] > 0.02:
                late_at.append(round(sent - wall_start, 1))

    readers = [await authed(server.port, user) for user in users[1:]]
    sender.send_text(json.dumps({"type": "send_message", "content": "0 hello",
                                 "recipientIds": [*users[1:], *extra_recipients]}))
    conversation_id = json.loads(await sender.recv(10))["data"]["conversationId"]
    await asyncio.sleep(0.5)  # past the hold after auth
    for reader in readers:
        reader.on_text = on_text
    sender.on_text = lambda _text: None
    process = psutil.Process(server.proc.pid if server.proc else 0)
    rss_before = peak = process.memory_info().rss
    padding = "x" * load.size
    interval = 1.0 / load.rate
    stalls = _StallProbe()
    stolen = steal_ms()
    start = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < load.seconds:
        while sent < int(elapsed / interval) + 1:
            sender.send_text(json.dumps({"type": "send_message",
                                         "conversationId": conversation_id,
                                         "content": f"{time.time():.6f} {padding}"}))
            sent += 1
        if sent % 50 == 0:
            peak = max(peak, process.memory_info().rss)
        await asyncio.sleep(max(0.0, start + sent * interval - time.monotonic()))
    await asyncio.sleep(1.0)
    stolen = steal_ms() - stolen
    client_stall_ms = stalls.stop()
    retransmits = user_retransmits([sender, *readers])
    for client in (sender, *readers):
        client.close()
    return {
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": statistics.quantiles(latencies, n=100)[98] * 1000
        if len(latencies) > 100 else float("nan"),
        "delivered": f"{len(latencies)}/{sent * len(readers)}",
        "rss_mb": peak / 2 ** 20, "rss_growth_mb": (peak - rss_before) / 2 ** 20,
        "late_at": str(sorted(set(late_at))), "client_stall_ms": client_stall_ms,
        "user_retransmits": retransmits, "steal_ms": stolen}


def steal_ms() -> float:
    """CPU time stolen by the hypervisor since boot, all cores, in milliseconds."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = handle.readline().split()  # cpu user nice system idle iowait irq softirq steal
    return int(fields[8]) * 1000 / os.sysconf("SC_CLK_TCK")


def user_retransmits(clients: Sequence[RawWebSocket]) -> float:
    """TCP segments retransmitted on these clients' connections, at both ends
    (``ss``'s ``retrans:now/total``); NaN where ``ss`` is missing."""
    ports = [client.transport.get_extra_info("sockname")[1]
             for client in clients if client.transport is not None]
    if not ports:
        return 0.0
    either = " or ".join(f"sport = :{p} or dport = :{p}" for p in ports)
    try:
        listing = subprocess.run(["ss", "-tinH", "state", "established", f"( {either} )"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return float("nan")
    return float(sum(int(total) for total in re.findall(r"\bretrans:\d+/(\d+)", listing)))


def show(result: Result) -> None:
    print("  ".join(f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}"
                    for key, value in result.items()), flush=True)


#: a pair whose runs lost more CPU than this to the hypervisor is reported apart
STEAL_LIMIT_MS = 500.0


def compare(quiet: Sequence[Result], loud: Sequence[Result],
            names: tuple[str, str] = ("A", "B")) -> None:
    """Medians of A and B and their ratio, for p50 and p99; then the same for
    the pairs (A and the B after it) in which neither run lost more than
    :data:`STEAL_LIMIT_MS` to the hypervisor, since on a shared host the
    stolen time stalls both server and clients and says nothing about
    either."""
    pairs = list(zip(quiet, loud, strict=False))
    clean = [(a, b) for a, b in pairs
             if max(float(a.get("steal_ms", 0.0)), float(b.get("steal_ms", 0.0)))
             <= STEAL_LIMIT_MS]
    for label, chosen in (("median", pairs), (f"steal <= {STEAL_LIMIT_MS:.0f} ms", clean)):
        if not chosen:
            print(f"{label}: no pair")
            continue
        for name in ("p50_ms", "p99_ms"):
            a = statistics.median(float(pair[0][name]) for pair in chosen)
            b = statistics.median(float(pair[1][name]) for pair in chosen)
            first, second = names
            print(f"{label} {name} ({len(chosen)} pairs): {first} {a:.2f}  {second} {b:.2f}"
                  f"  {second}/{first} {b / a:.2f}")
