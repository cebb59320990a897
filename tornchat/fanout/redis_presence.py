"""Cluster-wide presence in Redis, built on the connection slots.

Whether a user is connected is what their slot set ``tornchat:conns:{user}``
(:mod:`tornchat.fanout.redis_slots`) already knows: members that have not
expired. Presence adds three keys, all in Redis, nothing in the database:

- ``tornchat:presence:{user}``, a hash: ``state`` (``online``/``offline``:
  what watchers were last told), ``left`` (while a grace runs: when the last
  connection ended) and ``seen`` (once offline: the ``lastSeenAt``). It
  expires :data:`LAST_SEEN_RETENTION` after its last change.
- ``tornchat:presence:watch:{user}``, a sorted set of the worker ids that
  watch the user, scored by when the registration expires (renewed by each
  worker's re-read, every heartbeat interval). A change is published only to
  these workers, on their own channel ``chat-worker:{id}``: a presence change
  costs one PUBLISH per watching worker, not one per worker in the cluster.
- ``tornchat:presence:due``, one sorted set of users to re-check and when:
  a user who just connected is due when their slot would expire, one whose
  last connection ended is due when the grace ends. Every worker's sweep
  (:meth:`RedisPresence.sweep`, a few times a second) takes what is due in
  one script: a user with live slots is pushed back to their latest slot
  expiry; one without goes offline, once, in that atomic step, whichever
  worker gets there first. A SIGKILLed worker's users therefore go offline
  when their slots expire, with nothing of that worker's needed.

On a Redis Cluster these keys carry the user's partition hash tag and there
is one due set per partition (:mod:`tornchat.fanout.redis_keys`): every
script stays inside one slot, a lookup is one call per partition, a sweep
one call per partition with something due.

Every transition runs in a Lua script reading ``TIME`` (host clocks never
matter) and returns the live watchers, whom the caller tells through the
bus. Thread rule: IOLoop thread only (asyncio Redis client).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from tornchat.contract.records import OFFLINE, ONLINE, PresenceStatus
from tornchat.contract.timefmt import iso_from_ms
from tornchat.errors import Unavailable
from tornchat.fanout.bus import Bus
from tornchat.fanout.presence import Presence
from tornchat.fanout.redis_keys import layout_for
from tornchat.fanout.redis_wire import REDIS_ERRORS, redis_client

log = logging.getLogger(__name__)

#: how long an offline user's ``lastSeenAt`` is remembered
LAST_SEEN_RETENTION = 30 * 24 * 3600
_SWEEP_BATCH = 200  # users one sweep call re-checks at most
_RESTORE_BATCH = 500  # restore scripts in flight at once
#: sweep calls per round while they come back full: 2,000 due users a round and
#: worker, several rounds a second (every online user comes due about once a
#: minute; 100,000 online users need about 1,700 checks a second cluster-wide)
_SWEEP_CALLS = 10

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: slots, state, watch, due; ARGV: user, slot ttl ms, retention ms
# -> the live watchers if the user was not online (they must be told), else {}
_CONNECTED = _NOW + """
redis.call('ZADD', KEYS[4], 'GT', now + tonumber(ARGV[2]), ARGV[1])
redis.call('HDEL', KEYS[2], 'left')
if redis.call('HGET', KEYS[2], 'state') == 'online' then return {} end
redis.call('HSET', KEYS[2], 'state', 'online')
redis.call('HDEL', KEYS[2], 'seen')
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return redis.call('ZRANGEBYSCORE', KEYS[3], now, '+inf')
"""

# After Redis lost everything: the record again, only for a user with a live
# slot and no record (one who left meanwhile, or is recorded already, is left
# alone; nor is a grace touched). KEYS: slots, state, watch, due; ARGV: user,
# retention ms -> the live watchers if the record was written, else {}
_RESTORED = _NOW + """
if redis.call('ZCOUNT', KEYS[1], now, '+inf') == 0 then return {} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('ZADD', KEYS[4], 'GT', top[2], ARGV[1])
redis.call('HSET', KEYS[2], 'state', 'online')
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return redis.call('ZRANGEBYSCORE', KEYS[3], now, '+inf')
"""

# KEYS: slots, state, due; ARGV: user, grace ms -> 1 if the grace began
_DISCONNECTED = _NOW + """
if redis.call('ZCOUNT', KEYS[1], now, '+inf') > 0 then return 0 end
if redis.call('HGET', KEYS[2], 'state') ~= 'online' then return 0 end
if not redis.call('HGET', KEYS[2], 'left') then
  redis.call('HSET', KEYS[2], 'left', now)
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# KEYS: due; ARGV: batch, slot prefix, state prefix, watch prefix, retention ms
# -> {users checked, {{user, seen ms, {watchers}} per user who went offline now}}
_SWEEP = _NOW + """
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, user in ipairs(due) do
  local slots = ARGV[2] .. user
  if redis.call('ZCOUNT', slots, now, '+inf') > 0 then
    local top = redis.call('ZRANGE', slots, -1, -1, 'WITHSCORES')
    redis.call('ZADD', KEYS[1], top[2], user)
  else
    redis.call('ZREM', KEYS[1], user)
    local state = ARGV[3] .. user
    if redis.call('HGET', state, 'state') == 'online' then
      local seen = redis.call('HGET', state, 'left') or tostring(now)
      redis.call('HSET', state, 'state', 'offline', 'seen', seen)
      redis.call('HDEL', state, 'left')
      redis.call('PEXPIRE', state, ARGV[5])
      local watchers = redis.call('ZRANGEBYSCORE', ARGV[4] .. user, now, '+inf')
      table.insert(out, {user, seen, watchers})
    end
  end
end
return {#due, out}
"""

# KEYS: per user its slots, state and watch keys, in threes;
# ARGV: worker id ('' = do not register), registration ttl ms
# -> per user {online 1/0, seen ms or false}
_LOOKUP = _NOW + """
local out = {}
local ttl = tonumber(ARGV[2])
for i = 1, #KEYS, 3 do
  local live = redis.call('ZCOUNT', KEYS[i], now, '+inf') > 0
  local state = redis.call('HMGET', KEYS[i + 1], 'state', 'seen')
  if ARGV[1] ~= '' then
    redis.call('ZADD', KEYS[i + 2], now + ttl, ARGV[1])
    redis.call('ZREMRANGEBYSCORE', KEYS[i + 2], '-inf', now)
    redis.call('PEXPIRE', KEYS[i + 2], ttl)
  end
  if live or state[1] == 'online' then
    table.insert(out, {1, false})
  else
    table.insert(out, {0, state[2]})
  end
end
return out
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisPresence(Presence):
    def __init__(self, url: str, worker_id: str, bus: Bus, *, grace: float, slot_ttl: float,
                 rewatch_interval: float, timeout: float = 2.0) -> None:
        super().__init__(bus, grace, rewatch_interval)
        self._redis = redis_client(url, timeout)
        self._keys = layout_for(url)
        self._worker_id = worker_id
        self._slot_ttl_ms = max(1000, int(slot_ttl * 1000))
        self._grace_ms = int(grace * 1000)
        #: a registration outlives two missed re-reads
        self._watch_ttl_ms = max(1000, int(rewatch_interval * 2.5 * 1000))
        self._retention_ms = LAST_SEEN_RETENTION * 1000
        self._connected = self._redis.register_script(_CONNECTED)
        self._restored = self._redis.register_script(_RESTORED)
        self._disconnected = self._redis.register_script(_DISCONNECTED)
        self._sweep = self._redis.register_script(_SWEEP)
        self._lookup = self._redis.register_script(_LOOKUP)

    async def connected(self, user_id: str) -> None:
        try:
            watchers = await self._connected(
                keys=self._online_keys(user_id),
                args=[user_id, self._slot_ttl_ms, self._retention_ms])
        except REDIS_ERRORS as exc:  # the next sweep or re-read sets it right
            log.warning("could not record presence: %s", exc, extra={"userId": user_id})
            return
        self._announce_online(user_id, watchers)

    def _online_keys(self, user_id: str) -> list[str]:
        """The keys of :data:`_CONNECTED` and :data:`_RESTORED`: slots, state, watch, due."""
        keys = self._keys
        return [keys.slot_key(user_id), keys.state_key(user_id), keys.watch_key(user_id),
                keys.user_due_key(user_id)]

    def _announce_online(self, user_id: str, watchers: Sequence[Any]) -> None:
        """Tell the watchers a script returned (it wrote the user online)."""
        if watchers:
            self.announce(PresenceStatus(user_id, ONLINE), tuple(map(_text, watchers)))

    async def restore(self, user_ids: Sequence[str]) -> None:
        """:data:`_RESTORED` for each user, :data:`_RESTORE_BATCH` calls at a
        time (run after this worker's slots were written again, so each live
        user has one); watchers registered meanwhile are told. A Redis error
        is raised: the caller retries the whole restore."""
        for start in range(0, len(user_ids), _RESTORE_BATCH):
            batch = user_ids[start:start + _RESTORE_BATCH]
            answers = await asyncio.gather(*(self._restored(
                keys=self._online_keys(user), args=[user, self._retention_ms])
                for user in batch))
            for user, watchers in zip(batch, answers, strict=True):
                self._announce_online(user, watchers)

    async def disconnected(self, user_id: str) -> None:
        try:
            keys = self._keys
            await self._disconnected(
                keys=[keys.slot_key(user_id), keys.state_key(user_id),
                      keys.user_due_key(user_id)],
                args=[user_id, self._grace_ms])
        except REDIS_ERRORS as exc:  # the slot expires; the sweep then ends presence
            log.warning("could not record a presence departure: %s", exc,
                        extra={"userId": user_id})

    async def lookup(self, user_ids: Sequence[str], watch: bool = False
                     ) -> list[PresenceStatus]:
        layout = self._keys
        groups = layout.by_partition(dict.fromkeys(user_ids))
        args: list[str | int] = [self._worker_id if watch else "", self._watch_ttl_ms]
        try:
            answers = await asyncio.gather(*(
                self._lookup(keys=[key for user in users for key in (
                    layout.slot_key(user), layout.state_key(user), layout.watch_key(user))],
                    args=args)
                for users in groups.values()))
        except REDIS_ERRORS as exc:
            raise Unavailable("Presence is unavailable right now; retry later") from exc
        row_of = {user: row for users, rows in zip(groups.values(), answers, strict=True)
                  for user, row in zip(users, rows, strict=True)}
        return [PresenceStatus(user, ONLINE) if row_of[user][0] else
                PresenceStatus(user, OFFLINE,
                               iso_from_ms(int(row_of[user][1])) if row_of[user][1] else None)
                for user in user_ids]

    async def sweep(self) -> None:
        await asyncio.gather(*(self._sweep_partition(partition)
                               for partition in range(self._keys.partitions)))

    async def _sweep_partition(self, partition: int) -> None:
        layout = self._keys
        args: list[str | int] = [
            _SWEEP_BATCH, layout.slot_prefix(partition), layout.state_prefix(partition),
            layout.watch_prefix(partition), self._retention_ms]
        for _ in range(_SWEEP_CALLS):
            checked, gone = await self._sweep(keys=[layout.due_key(partition)], args=args)
            for user, seen, watchers in gone:
                status = PresenceStatus(_text(user), OFFLINE, iso_from_ms(int(seen)))
                self.announce(status, tuple(map(_text, watchers)))
            if int(checked) < _SWEEP_BATCH:
                return

    async def stop(self) -> None:
        await super().stop()
        await self._redis.aclose()
