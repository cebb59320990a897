"""Cluster-wide connection slots in Redis: the per-user limit across workers and hosts.

Each user has one sorted set ``tornchat:conns:{userId}`` whose members are
``{workerId}|{connectionId}`` and whose scores are the entry's expiry in Redis
server milliseconds (``TIME``, so host clocks never matter). A Lua script
drops expired members, counts, and adds in one atomic step, so two workers
racing for a user's last slot cannot both win. The heartbeat re-scores live
entries (``refresh``); an entry whose worker was SIGKILLed simply stops being
refreshed and expires after ``ttl`` seconds, so nothing leaks.

The ``workerId`` prefix of a member is also the routing table of the routed
bus mode (:data:`~tornchat.fanout.redis_wire.ROUTED_PUBLISH`): which workers hold a
user's connections. The client is :func:`~tornchat.fanout.redis_wire.redis_client`.

On a Redis Cluster the key carries its partition's hash tag
(:mod:`tornchat.fanout.redis_keys`) and a refresh is one script call per
partition, since a script may touch one slot only.

When Redis cannot be reached the slots fail open to a per-process limit (chat
keeps working on this worker; the cluster-wide count is restored by the next
``refresh``, which re-adds every live entry).

Thread rule: IOLoop thread only (asyncio Redis client).
"""

from __future__ import annotations

import logging

from tornchat.fanout.redis_keys import SINGLE, KeyLayout, layout_for
from tornchat.fanout.redis_wire import REDIS_ERRORS, redis_client
from tornchat.fanout.slots import ConnectionSlots, InMemorySlots

log = logging.getLogger(__name__)

_REFRESH_BATCH = 500  # entries per script call, so one call never blocks Redis for long

# KEYS[1] user set; ARGV: member, limit, ttl_ms -> 1 taken, 0 full
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS user sets; ARGV[1] ttl_ms, ARGV[i+1] the member held in KEYS[i]
_REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', key, ttl)
end
return #KEYS
"""


# KEYS[1] user set -> live members
_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], now, '+inf')
"""


def slot_key(user_id: str, layout: KeyLayout = SINGLE) -> str:
    return layout.slot_key(user_id)


def slot_member(worker_id: str, connection_id: str) -> str:
    return f"{worker_id}|{connection_id}"


class RedisSlots(ConnectionSlots):
    """The connection limit as Redis sorted sets with expiring members."""

    def __init__(self, url: str, worker_id: str, limit: int, ttl: float,
                 timeout: float = 2.0) -> None:
        self._redis = redis_client(url, timeout)
        self._keys = layout_for(url)
        self._worker_id = worker_id
        self._limit = limit
        self._ttl_ms = max(1000, int(ttl * 1000))
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._refresh = self._redis.register_script(_REFRESH)
        self._count = self._redis.register_script(_COUNT)
        self._local = InMemorySlots(limit)  # this process's holders; the fail-open limit

    async def acquire(self, user_id: str, connection_id: str) -> bool:
        if not await self._local.acquire(user_id, connection_id):
            return False
        member = slot_member(self._worker_id, connection_id)
        try:
            taken = await self._acquire(keys=[self._keys.slot_key(user_id)],
                                        args=[member, self._limit, self._ttl_ms])
        except REDIS_ERRORS as exc:
            log.warning("Redis unreachable for connection slots; enforcing the limit per "
                        "process until it returns: %s", exc, extra={"userId": user_id})
            return True
        if not taken:
            await self._local.release(user_id, connection_id)
        return bool(taken)

    async def release(self, user_id: str, connection_id: str) -> None:
        await self._local.release(user_id, connection_id)
        try:
            await self._redis.zrem(self._keys.slot_key(user_id),
                                   slot_member(self._worker_id, connection_id))
        except REDIS_ERRORS as exc:  # the entry expires on its own
            log.warning("could not release a connection slot: %s", exc,
                        extra={"userId": user_id, "connectionId": connection_id})

    async def refresh(self, holders: list[tuple[str, str]]) -> None:
        if not holders:
            return
        groups: dict[int, list[tuple[str, str]]] = {}
        for holder in holders:
            groups.setdefault(self._keys.partition(holder[0]), []).append(holder)
        for group in groups.values():  # one failing shard must not skip the others
            try:
                for start in range(0, len(group), _REFRESH_BATCH):
                    batch = group[start:start + _REFRESH_BATCH]
                    await self._refresh(
                        keys=[self._keys.slot_key(user_id) for user_id, _ in batch],
                        args=[self._ttl_ms,
                              *(slot_member(self._worker_id, c) for _, c in batch)])
            except REDIS_ERRORS as exc:
                log.warning("could not refresh connection slots: %s", exc,
                            extra={"connections": len(group)})

    async def count(self, user_id: str) -> int:
        """Live connections of the user, cluster-wide (this process's alone
        while Redis is unreachable)."""
        try:
            return int(await self._count(keys=[self._keys.slot_key(user_id)]))
        except REDIS_ERRORS:
            return await self._local.count(user_id)

    async def close(self) -> None:
        await self._redis.aclose()
