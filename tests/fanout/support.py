"""What only the cluster tests use: unique users, /metrics, frames, killing workers.

Instances of ``serve --processes N`` and their workers are started by
:mod:`harness.cluster`; a private redis-server comes from :mod:`harness.redis_server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

from harness.redis_cluster import private_redis_cluster
from harness.server import TEST_SECRET, ServerProcess
from harness.services import require_redis
from harness.wsclient import WsClient, connect_and_auth
from harness.wsclient import authed as authed_at
from tornchat.auth import mint_token


@contextlib.contextmanager
def redis_for(variant: str, tmp_path_factory: Any) -> Iterator[tuple[str, str]]:
    """(REDIS_URL, TORNCHAT_BUS_MODE) of a cluster-suite variant: ``pattern`` or
    ``routed`` on the shared Redis, ``redis-cluster``: routed over sharded pub/sub
    on a private 3-master Redis Cluster."""
    if variant != "redis-cluster":
        yield require_redis(), variant
        return
    with private_redis_cluster(str(tmp_path_factory.mktemp("redis-cluster"))) as cluster:
        yield cluster.url, "routed"


def unique(name: str) -> str:
    """A user id no other test (or earlier run sharing Redis) uses."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def metrics_text(server: ServerProcess) -> str:
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=3) as response:
        return response.read().decode()


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} missing from /metrics")


async def connect(server: ServerProcess, user_id: str) -> tuple[WsClient, dict]:
    """Connect and send auth; returns the client and the server's first reply."""
    return await connect_and_auth(server.ws_url, TEST_SECRET, user_id)


async def connect_pipelined(server: ServerProcess, user_id: str, frame: dict) -> WsClient:
    """Connect and send auth and ``frame`` back to back, without waiting;
    asserts auth_success."""
    client = await WsClient.connect(server.ws_url)
    await client.send({"type": "auth", "token": mint_token(TEST_SECRET, user_id)})
    await client.send(frame)
    reply = await client.recv()
    assert reply["type"] == "auth_success", reply
    return client


async def authed(server: ServerProcess, user_id: str) -> WsClient:
    return await authed_at(server.ws_url, TEST_SECRET, user_id)


async def frames_of(client: WsClient, kind: str, count: int,
                    timeout: float = 10.0) -> list[dict]:
    """The next ``count`` frames of type ``kind`` (other types are skipped)."""
    found: list[dict] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(found) < count:
        try:
            frame = await client.recv(max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise AssertionError(f"got {len(found)} of {count} {kind} frames; last: "
                                 f"{found[-2:]}") from None
        if frame["type"] == kind:
            found.append(frame)
    return found


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


async def dropped_by_server(client: WsClient) -> bool:
    """Has the server side of ``client`` gone away (a killed worker)?"""
    try:
        await client.recv(0.05)
    except TimeoutError:
        return False
    except AssertionError:  # ClosedError: the server side went away
        return True
    return False


async def kill_until_some_drop(pids: list[int], clients: list[WsClient]
                               ) -> tuple[list[int], float]:
    """SIGKILL the workers ``pids`` one by one until some of ``clients`` lose
    their connection (they may all sit on one worker); the indices of those
    that did, and when the worker that dropped them was killed."""
    dropped: list[int] = []
    killed_at = time.monotonic()
    for pid in pids:
        kill(pid)
        killed_at = time.monotonic()
        await asyncio.sleep(0.5)
        dropped = [index for index, client in enumerate(clients)
                   if await dropped_by_server(client)]
        if dropped:
            break
    return dropped, killed_at
