"""Slow-consumer benchmark: ``python -m loadtest.slow_bench [--rounds 3]``.

Does a member who stops reading slow down the rest of its group? One
``tornchat serve`` (SQLite, one worker); in each run a fresh group of
``--members`` users (1 sender and the rest readers) gets ``--rate`` messages
a second of ``--size`` bytes, open loop, for ``--seconds``. Run A has only
readers; run B adds one member whose socket stops reading after
authenticating (a tiny receive buffer, never read again). A and B alternate
``--rounds`` times. Reported per run: the readers' send-to-receive latency
p50 / p99, whether (and after how long) the stalled member was closed with
4008, and the server's RSS; then the medians and the B/A ratio.

Target (issue: hardening): the readers' p99 in B within 1.5x of A; the
server's memory bounded by TORNCHAT_MAX_OUTBOUND_BYTES per stalled
connection (1 MiB by default) plus what the kernel buffers for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import struct
import tempfile
import time
import uuid

import psutil

from harness.rawws import RawWebSocket, client_frame, upgrade_request
from harness.server import TEST_SECRET, ServerProcess
from tornchat.auth import mint_token


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.slow_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="A/B pairs")
    parser.add_argument("--members", type=int, default=10, help="group size, sender included")
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second")
    parser.add_argument("--size", type=int, default=12000, help="bytes of content")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each run")
    return parser


async def _authed(port: int, user: str) -> RawWebSocket:
    client = await RawWebSocket.connect(f"ws://127.0.0.1:{port}/api/v1/chat")
    client.send_text(json.dumps({"type": "auth", "token": mint_token(TEST_SECRET, user)}))
    reply = json.loads(await client.recv(10))
    assert reply["type"] == "auth_success", reply
    return client


async def _stalled(port: int, user: str) -> socket.socket:
    """Authenticated, then never read again."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, upgrade_request("127.0.0.1", port, "/api/v1/chat"))
    await loop.sock_sendall(sock, client_frame(json.dumps(
        {"type": "auth", "token": mint_token(TEST_SECRET, user)}).encode()))
    head = b""
    while b"auth_success" not in head:
        head += await asyncio.wait_for(loop.sock_recv(sock, 1024), 10)
    return sock


def _close_code(data: bytes) -> int | None:
    pos, code = 0, None
    while pos + 2 <= len(data):
        opcode, size = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if size == 126:
            size, pos = struct.unpack_from("!H", data, pos)[0], pos + 2
        elif size == 127:
            size, pos = struct.unpack_from("!Q", data, pos)[0], pos + 8
        if opcode == 0x8 and size >= 2:
            code = struct.unpack_from("!H", data, pos)[0]
        pos += size
    return code


async def _drain(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while True:
        try:
            more = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10)
        except (TimeoutError, ConnectionResetError):
            return data
        if not more:
            return data
        data += more


async def one_run(server: ServerProcess, args: argparse.Namespace, stall: bool
                  ) -> dict[str, float | str]:
    tag = uuid.uuid4().hex[:6]
    users = [f"slow-{tag}-{n}" for n in range(args.members)]
    sender = await _authed(server.port, users[0])
    latencies: list[float] = []

    def on_text(text: str) -> None:
        if text.startswith('{"type":"new_message"'):
            sent = float(json.loads(text)["data"]["content"].split(" ", 1)[0])
            latencies.append(time.time() - sent)

    readers = [await _authed(server.port, user) for user in users[1:]]
    stalled_user = f"slow-{tag}-stalled"
    recipients = users[1:] + ([stalled_user] if stall else [])
    stalled = await _stalled(server.port, stalled_user) if stall else None
    sender.send_text(json.dumps({"type": "send_message", "recipientIds": recipients,
                                 "content": "0 hello"}))
    ack = json.loads(await sender.recv(10))
    conversation_id = ack["data"]["conversationId"]
    await asyncio.sleep(0.5)  # past the hold after auth
    for reader in readers:
        reader.on_text = on_text
    sender.on_text = lambda _text: None
    process = psutil.Process(server.proc.pid if server.proc else 0)
    rss_before = process.memory_info().rss
    padding = "x" * args.size
    interval = 1.0 / args.rate
    start = time.monotonic()
    sent = 0
    peak = rss_before
    while (elapsed := time.monotonic() - start) < args.seconds:
        due = int(elapsed / interval) + 1
        while sent < due:
            sender.send_text(json.dumps({"type": "send_message",
                                         "conversationId": conversation_id,
                                         "content": f"{time.time():.6f} {padding}"}))
            sent += 1
        if sent % 50 == 0:
            peak = max(peak, process.memory_info().rss)
        await asyncio.sleep(max(0.0, start + sent * interval - time.monotonic()))
    await asyncio.sleep(1.0)
    expected = sent * len(readers)
    result: dict[str, float | str] = {
        "run": "B (one stalled)" if stall else "A (all read)",
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": statistics.quantiles(latencies, n=100)[98] * 1000
        if len(latencies) > 100 else float("nan"),
        "delivered": f"{len(latencies)}/{expected}",
        "rss_mb": peak / 2 ** 20, "rss_growth_mb": (peak - rss_before) / 2 ** 20}
    if stalled is not None:
        result["stalled_close"] = str(_close_code(await _drain(stalled)))
        stalled.close()
    for client in (sender, *readers):
        client.close()
    return result


async def main(args: argparse.Namespace) -> None:
    directory = tempfile.mkdtemp(prefix="slow-bench-")
    server = ServerProcess(cwd=directory, env={
        "DATABASE_URL": f"sqlite:///{directory}/chat.db", "LOG_LEVEL": "warning",
        "TORNCHAT_MAX_MESSAGE_LENGTH": str(args.size + 100),
        "TORNCHAT_RATE_LIMIT_PER_SECOND": "100000", "TORNCHAT_RATE_LIMIT_BURST": "100000",
        "TORNCHAT_HEARTBEAT_INTERVAL": "60"}).start()
    results: list[dict[str, float | str]] = []
    try:
        for _ in range(args.rounds):
            for stall in (False, True):
                result = await one_run(server, args, stall)
                results.append(result)
                print("  ".join(f"{key}={value:.2f}" if isinstance(value, float)
                                else f"{key}={value}" for key, value in result.items()),
                      flush=True)
    finally:
        server.stop()
    quiet = [r for r in results if r["run"].startswith("A")]
    loud = [r for r in results if r["run"].startswith("B")]
    for name in ("p50_ms", "p99_ms"):
        a = statistics.median(float(r[name]) for r in quiet)
        b = statistics.median(float(r[name]) for r in loud)
        print(f"median {name}: A {a:.2f}  B {b:.2f}  B/A {b / a:.2f}")
    print("stalled member closed with:", [r.get("stalled_close") for r in loud])
    print(f"peak RSS growth in B (MB): {[round(float(r['rss_growth_mb']), 1) for r in loud]}")


if __name__ == "__main__":
    asyncio.run(main(build_parser().parse_args()))
