"""The Redis wire format of the bus: channel names, the envelope, the Lua scripts, the client.

Why one module: every worker of every instance must agree on these bytes,
an old worker and a new one too during a rolling upgrade, so they live
together and change only on purpose. The bus (:mod:`tornchat.fanout.redis_bus`),
the peer watch (:mod:`tornchat.fanout.redis_peers`) and the connection slots
(:mod:`tornchat.fanout.redis_slots`) build on it.

Channels. ``chat:{conversationId}`` carries deliveries in pattern mode (every
worker subscribes to ``chat:*``); ``chat-worker:{workerId}`` in routed mode
(outside the pattern on purpose). ``tornchat:probe:{workerId}`` is each
worker's own: health nonces come back on it, acknowledgements of its hello
arrive on it as ``hello-ack:{workerId}``, and its existence is how the others
find the worker. ``tornchat:hello`` carries the id of a worker that has just
(re)subscribed.

The envelope. Each delivery travels as ``{workerId}|{JSON}``; the prefix lets
the listener thread drop a worker's own echo by comparing bytes, before any
parsing. The JSON object holds the :class:`~tornchat.fanout.bus.Delivery`
fields and, first, ``"v"``: the envelope version, :data:`ENVELOPE_VERSION`.
The version is a field, not a prefix segment, because workers from before it
split at the first ``|`` and parse the rest: a key they do not know is
ignored by them, while a new segment would make every message from an
upgraded worker malformed to them. A field is also the cheapest: the
receiver parses the JSON anyway, so checking the version costs one key
lookup. A receiver accepts every version up to :data:`ENVELOPE_VERSION` and
an envelope without ``"v"`` (an older worker's: version 1, the same fields);
it refuses any newer one (:class:`UnknownVersion`) rather than misread it.
The encoder writes the oldest version that can carry a delivery: 1 for
everything version-1 workers handle right (messages, typing, read positions,
which they write to the users as any frame), 2 for a server-API disconnect,
which a version-1 worker would write as a frame and never close: it refuses
version 2 instead (:func:`version_of`); 3 for a presence change, which a
version-2 worker would write to the watched user's own connections (such a
worker never registers as a watcher, so it should never get one; the
version makes sure). A future version must stay
a JSON object carrying ``"v"``, so that this code can tell; a field that
readers may ignore needs no new version.

A Redis Cluster (``REDIS_URL=redis+cluster://host:port/``, any one node)
runs routed mode over sharded pub/sub: each worker's own channels carry its
id as a hash tag (``chat-worker:{workerId}``, ``tornchat:probe:{workerId}``),
so they live on one shard, where the worker SSUBSCRIBEs, and a publisher
SPUBLISHes to exactly that shard; adding shards spreads the channels. Plain
PUBLISH on a cluster reaches every node, which is why pattern mode is refused
there. Which workers hold a user's connections is read from the users' slot
sets with plain ``ZRANGE`` in a cluster pipeline (scripts cannot be pipelined
on a cluster, and one script call per key partition cost the publisher over
a millisecond of CPU per message, measured).

Thread rule: constants and pure functions, except :func:`redis_client`, whose
asyncio client belongs to the IOLoop that uses it (create it after the fork).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from tornchat.config import CLUSTER_SCHEMES
from tornchat.fanout.bus import DISCONNECT, PRESENCE, Delivery

CHANNEL_PREFIX = "chat:"
PATTERN = CHANNEL_PREFIX + "*"
WORKER_CHANNEL_PREFIX = "chat-worker:"  # routed mode; outside the chat:* pattern on purpose
PROBE_CHANNEL_PREFIX = "tornchat:probe:"
HELLO_CHANNEL = "tornchat:hello"
HELLO_CHANNEL_BYTES = HELLO_CHANNEL.encode()
#: + the acknowledging worker's id, published on the newcomer's probe channel
ACK_PREFIX = b"hello-ack:"

#: the newest envelope version this code writes and reads
ENVELOPE_VERSION = 3
#: the version of an envelope without ``"v"``: what workers sent before versioning
LEGACY_VERSION = 1

#: Redis connections per client (and per worker process) before callers queue
POOL_SIZE = 32

# KEYS: the recipients' slot sets; ARGV: channel prefix, payload, own worker id.
# Publishes once to every other worker holding a live connection of a recipient.
ROUTED_PUBLISH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seen = {[ARGV[3]] = true}
local sent = 0
for _, key in ipairs(KEYS) do
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', key, now, '+inf')) do
    local worker = string.match(member, '^(.-)|')
    if worker and not seen[worker] then
      seen[worker] = true
      redis.call('PUBLISH', ARGV[1] .. worker, ARGV[2])
      sent = sent + 1
    end
  end
end
return sent
"""

# ARGV: channel, payload, channel, payload, ... One command (and one reply) for a
# whole batch: redis-py spends several microseconds of Python per pipelined
# command and per reply, more than Redis spends publishing.
PUBLISH_MANY = """
for i = 1, #ARGV, 2 do
  redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
"""


#: what a Redis call may raise when Redis (or a cluster) cannot serve it:
#: redis-py's cluster client raises RedisClusterException, which is no RedisError,
#: when no node answers (its slot map cannot be refreshed)
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException)


def is_cluster_url(url: str) -> bool:
    """``redis+cluster://`` or ``rediss+cluster://``: a Redis Cluster."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def node_url(url: str) -> str:
    """The plain ``redis://``/``rediss://`` URL of the node a cluster URL names."""
    scheme, sep, rest = url.partition("://")
    return scheme.lower().removesuffix("+cluster") + sep + rest if is_cluster_url(url) else url


def worker_channel(worker_id: str, cluster: bool) -> str:
    """A worker's own delivery channel (hash-tagged on a cluster)."""
    return WORKER_CHANNEL_PREFIX + (f"{{{worker_id}}}" if cluster else worker_id)


def probe_channel(worker_id: str, cluster: bool) -> str:
    """A worker's probe channel, on the same shard as its delivery channel."""
    return PROBE_CHANNEL_PREFIX + (f"{{{worker_id}}}" if cluster else worker_id)


class UnknownVersion(Exception):
    """An envelope of a version this code cannot read (a newer worker's)."""

    def __init__(self, version: int) -> None:
        super().__init__(f"bus envelope version {version}")
        self.version = version


def origin_of(worker_id: str) -> str:
    """The prefix of every envelope ``worker_id`` sends (and ignores when it comes back)."""
    return worker_id + "|"


def version_of(delivery: Delivery) -> int:
    """The oldest envelope version whose readers handle ``delivery`` right."""
    if delivery.kind == PRESENCE:
        return 3
    return 2 if delivery.kind == DISCONNECT else LEGACY_VERSION


def encode(origin: str, delivery: Delivery, sent_at: float | None = None) -> str:
    """The envelope of ``delivery``; ``origin`` is the sender's :func:`origin_of`;
    ``sent_at`` (stage timing) travels as a field older readers ignore."""
    fields = {
        "v": version_of(delivery), "kind": delivery.kind,
        "conversation_id": delivery.conversation_id, "user_ids": delivery.user_ids,
        "frame": delivery.frame, "exclude_connection": delivery.exclude_connection,
        "seq": delivery.seq, "published_at": delivery.published_at,
    }
    if sent_at is not None:
        fields["sent_at"] = sent_at
    return origin + orjson.dumps(fields).decode()


def decode(payload: bytes) -> Delivery:
    """The delivery in an envelope from another worker.

    Raises :class:`UnknownVersion` for a version past :data:`ENVELOPE_VERSION`
    (or below 1), and ``ValueError``, ``TypeError`` or ``KeyError``
    for a malformed envelope.
    """
    fields: Any = orjson.loads(payload.partition(b"|")[2])
    if not isinstance(fields, dict):
        raise TypeError("bus envelope is not a JSON object")
    version = fields.get("v", LEGACY_VERSION)
    if type(version) is not int:
        raise TypeError(f"bus envelope version is not an integer: {version!r}")
    if not LEGACY_VERSION <= version <= ENVELOPE_VERSION:
        raise UnknownVersion(version)
    return Delivery(fields["kind"], fields["conversation_id"], tuple(fields["user_ids"]),
                    fields["frame"], fields.get("exclude_connection"), fields.get("seq"),
                    fields.get("published_at", 0.0), sent_at=_seconds(fields.get("sent_at")))


class QueuedRedisCluster(aioredis.RedisCluster):
    """redis-py's asyncio cluster client raises ``MaxConnectionsError`` when every
    connection to a node is busy, where the single-Redis client's blocking pool
    waits; a login burst would then look like an outage. Commands queue here
    instead, at most ``concurrency`` in flight (pipelines take one connection per
    node and are not counted).

    It also turns an ``AttributeError`` or ``TypeError`` from inside redis-py
    into a connection error. While a node restarts, a command can reach a
    connection that another one is tearing down, and redis-py 8.1.0 then
    fails writing to its cleared stream (``'NoneType' object has no attribute
    'writelines'``; redis/redis-py#4287 reports the same family). That is no
    ``RedisError``, so every caller's outage handling missed it: a login
    during a shard restart got ``internal_error`` (seen in
    tests/fanout/test_redis_cluster.py)."""

    def __init__(self, *args: Any, concurrency: int = POOL_SIZE, wait: float = 2.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = asyncio.Semaphore(concurrency)
        self._wait = wait

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:  # waits as long as the single-Redis pool would, then fails like it
            await asyncio.wait_for(self._gate.acquire(), self._wait)
        except TimeoutError:
            raise RedisConnectionError("no free Redis Cluster connection in time") from None
        try:
            return await super().execute_command(*args, **kwargs)
        except (AttributeError, TypeError) as exc:
            raise RedisConnectionError(
                f"Redis Cluster connection torn down mid-command: {exc!r}") from exc
        finally:
            self._gate.release()


AnyRedis = aioredis.Redis | aioredis.RedisCluster


def _seconds(value: object) -> float | None:
    """An optional timestamp field: a number, or nothing."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def redis_client(url: str, timeout: float, pool_size: int = POOL_SIZE,
                 single_connection: bool = False) -> AnyRedis:
    """An asyncio client that fails fast: a short timeout and one immediate retry.

    The single retry reconnects a pooled connection that died with a Redis
    restart; anything longer would stall the IOLoop's callers while Redis is down.
    The pool *waits* (up to ``timeout``) for a free connection when all
    ``pool_size`` are busy: redis-py's default pool raises "Too many
    connections" instead, which a burst of logins (hundreds of slot claims at
    once) turned into a false Redis outage. ``single_connection``: every
    command goes over one connection, skipping the pool's check-out and
    check-in (for a client whose commands are issued one at a time anyway,
    like the bus publisher).
    """
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    if is_cluster_url(url):
        # one pool per node; a MOVED or a failed node makes the client re-read
        # the slot map (redis-py's cluster client does both)
        return QueuedRedisCluster.from_url(
            node_url(url), concurrency=pool_size, wait=timeout, max_connections=pool_size + 8,
            socket_timeout=timeout,
            socket_connect_timeout=timeout, socket_keepalive=True,
            retry=Retry(NoBackoff(), 1))
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=timeout, socket_timeout=timeout,
        socket_connect_timeout=timeout, socket_keepalive=True, health_check_interval=30,
        retry=Retry(NoBackoff(), 1))
    if not single_connection:
        return aioredis.Redis.from_pool(pool)
    client = aioredis.Redis(connection_pool=pool, single_connection_client=True)
    client.auto_close_connection_pool = True  # as from_pool does: the client owns the pool
    return client
