"""The supervisor of ``serve --processes 2``: drain on SIGTERM, no orphans.

SQLite is enough here (the workers share it through the file); Redis is the
shared 6379.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from harness.cluster import start_instances, workers_of
from harness.ports import wait_until
from harness.services import require_redis
from tests.fanout.support import authed, unique

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        return handle.read().split()[2] != "Z"


@pytest.fixture
def instance(tmp_path):
    env = {"REDIS_URL": require_redis(), "DATABASE_URL": f"sqlite:///{tmp_path}/chat.db"}
    (server,) = start_instances(env, count=1)
    yield server
    server.stop()


async def test_sigterm_to_the_supervisor_drains_every_worker(instance):
    workers = workers_of(instance)
    user = unique("drain")
    clients = [await authed(instance, f"{user}-{i}") for i in range(6)]
    instance.signal(signal.SIGTERM)

    async def shutdown_seen(client) -> int | None:
        assert (await client.expect("server_shutdown"))["data"] == {"reconnectAfterMs": 5000}
        return await client.wait_closed()

    assert await asyncio.gather(*map(shutdown_seen, clients)) == [1001] * len(clients)
    assert await asyncio.to_thread(instance.wait, 10) == 0
    assert not any(alive(pid) for pid in workers)
    logs = instance.logs()
    assert logs.count('"shutdown complete"') == 2 and "all workers exited" in logs


async def test_workers_do_not_outlive_a_killed_supervisor(instance):
    workers = workers_of(instance)
    instance.signal(signal.SIGKILL)
    instance.wait(5)
    wait_until(lambda: not any(alive(pid) for pid in workers), 10,
               what="orphaned workers to exit")
