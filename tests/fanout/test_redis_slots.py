"""Connection slots in the real Redis: a burst of logins is not an outage."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
import redis

from harness.services import require_redis
from tornchat.fanout.redis_slots import RedisSlots, slot_key
from tornchat.fanout.redis_wire import POOL_SIZE

pytestmark = pytest.mark.redis


async def test_a_burst_of_logins_larger_than_the_pool_waits_for_connections(caplog):
    """Ten times more simultaneous slot claims than pooled connections: every
    one reaches Redis (none falls back to the per-process limit)."""
    caplog.set_level(logging.WARNING, logger="tornchat.fanout.redis_slots")
    url = require_redis()
    slots = RedisSlots(url, "worker-under-test", limit=5, ttl=30.0)
    users = [f"burst-{uuid.uuid4().hex}" for _ in range(POOL_SIZE * 10)]
    try:
        claims = await asyncio.gather(*(slots.acquire(user, f"conn-{user}") for user in users))
        assert all(claims)
        assert not [r for r in caplog.records if "unreachable" in r.getMessage()]
        check = redis.Redis.from_url(url)
        try:
            held = [check.zcard(slot_key(user)) for user in users]
        finally:
            check.close()
        assert held == [1] * len(users)
        await asyncio.gather(*(slots.release(user, f"conn-{user}") for user in users))
        assert not [r for r in caplog.records if "could not release" in r.getMessage()]
    finally:
        await slots.close()
