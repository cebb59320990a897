"""What is particular to a Redis Cluster (``REDIS_URL=redis+cluster://``): where
the keys live, that deliveries travel by sharded pub/sub to the shard of each
worker's own channel and never by cluster-wide PUBLISH, and that the bus
follows a shard that is killed and restarted and a channel slot that moves.
The whole cluster suite (tests/fanout/test_cluster.py, test_presence_cluster.py)
also runs on a cluster; this module adds what only a cluster can show.

Two ``serve --processes 2`` instances, a private 3-master cluster, PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from harness.cluster import all_workers_healthy, start_instances, stop_all
from harness.ports import wait_until
from harness.redis_cluster import private_redis_cluster
from harness.redis_server import command_calls
from harness.services import fresh_postgres_database, migrated
from tests.fanout.support import authed, unique
from tornchat.config import load_settings
from tornchat.errors import ConfigError
from tornchat.fanout.redis_keys import CLUSTER
from tornchat.fanout.redis_wire import redis_client

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    with private_redis_cluster(str(tmp_path_factory.mktemp("cluster"))) as redis_cluster, \
            fresh_postgres_database() as database_url:
        servers = start_instances({"DATABASE_URL": migrated(database_url),
                                   "REDIS_URL": redis_cluster.url,
                                   "TORNCHAT_BUS_MODE": "routed"})
        try:
            yield redis_cluster, servers
        finally:
            stop_all(servers)


def cluster_calls(redis_cluster, command: str) -> int:
    """Calls of ``command`` on every node since the last CONFIG RESETSTAT."""
    return sum(command_calls(node.port).get(command, 0) for node in redis_cluster.nodes)


def worker_channels(redis_cluster) -> dict[str, int]:
    """Each subscribed worker channel and the port of the node that carries it."""
    found = {}
    for node in redis_cluster.nodes:
        for name in redis_cluster.cli(node, "pubsub", "shardchannels", "chat-worker:*").split():
            found[name] = node.port
    return found


def users_in_partitions(partitions: list[int]) -> list[str]:
    """One fresh user id per partition, in that order (random ids could all
    land in partitions of one shard)."""
    found: dict[int, str] = {}
    while len(found) < len(partitions):
        user = unique("user")
        partition = CLUSTER.partition(user)
        if partition in partitions:
            found.setdefault(partition, user)
    return [found[partition] for partition in partitions]


async def pairs_deliver(servers, users: int = 4) -> bool:
    """Users spread over both instances each get a message sent from the other one."""
    a, b = servers
    ok = True
    for index in range(users):
        here, there = (a, b) if index % 2 else (b, a)
        receiver_id, sender_id = unique("rx"), unique("tx")
        receiver = await authed(here, receiver_id)
        sender = await authed(there, sender_id)
        ack = await sender.request({"type": "send_message", "recipientIds": [receiver_id],
                                    "content": "through the cluster"})
        try:
            ok = ok and ack["type"] == "message_sent" and (
                await receiver.expect("new_message", timeout=2.0))["data"]["content"] \
                == "through the cluster"
        except (AssertionError, TimeoutError):
            ok = False
        receiver.close()
        sender.close()
    return ok


def test_a_cluster_url_needs_routed_mode_and_names_a_node():
    settings = load_settings(environ={"REDIS_URL": "redis+cluster://10.0.0.5:7000/",
                                      "TORNCHAT_BUS_MODE": "routed"})
    assert settings.redis_url.startswith("redis+cluster://")
    with pytest.raises(ConfigError, match=r"TORNCHAT_BUS_MODE.*routed"):
        load_settings(environ={"REDIS_URL": "redis+cluster://10.0.0.5:7000/"})
    with pytest.raises(ConfigError, match=r"REDIS_URL.*one node"):
        load_settings(environ={"REDIS_URL": "rediss+cluster:///", "TORNCHAT_BUS_MODE": "routed"})


async def test_each_users_keys_live_in_their_partition_on_the_shard_that_owns_it(deployment):
    redis_cluster, (a, b) = deployment
    users = users_in_partitions([0, 3, 6, 9, 12, 15])  # evenly spaced slots: several shards
    clients = [await authed(a if i % 2 else b, user) for i, user in enumerate(users)]
    await clients[0].request({"type": "presence_subscribe", "userIds": users[1:2]})
    shards = set()
    for user in users:
        key = CLUSTER.slot_key(user)
        assert key.startswith(f"tornchat:{{{CLUSTER.tags[CLUSTER.partition(user)]}}}:conns:")
        owner = redis_cluster.node_of(key)
        shards.add(owner.port)
        assert redis_cluster.cli(owner, "zcard", key).strip() == "1", key
        state = CLUSTER.state_key(user)
        assert redis_cluster.node_of(state) is owner  # one slot per user: scripts stay in it
        assert redis_cluster.node_of(CLUSTER.user_due_key(user)) is owner
    assert len(shards) >= 2  # spread over the cluster
    for client in clients:
        client.close()


def test_the_partitions_spread_evenly_over_evenly_split_shards():
    slots = [key_slot(tag.encode()) for tag in CLUSTER.tags]
    for shards in (2, 3, 4, 8, 16):
        per_shard = [0] * shards
        for slot in slots:
            per_shard[slot * shards // 16384] += 1
        assert max(per_shard) - min(per_shard) <= 1, (shards, per_shard)


async def test_messages_go_by_spublish_to_each_workers_own_shard_never_by_publish(deployment):
    redis_cluster, servers = deployment
    channels = worker_channels(redis_cluster)
    assert len(channels) == 4  # 2 instances x 2 workers, one sharded channel each
    assert all(name.startswith("chat-worker:{") for name in channels)
    for node in redis_cluster.nodes:
        redis_cluster.cli(node, "config", "resetstat")
    assert await pairs_deliver(servers, users=8)
    assert cluster_calls(redis_cluster, "spublish") >= 1
    assert cluster_calls(redis_cluster, "publish") == 0  # a PUBLISH would reach every node


async def test_the_bus_follows_a_channel_whose_slot_moves_to_another_shard(deployment):
    redis_cluster, servers = deployment
    channel, port = next(iter(worker_channels(redis_cluster).items()))
    slot = redis_cluster.cli(redis_cluster.nodes[0], "cluster", "keyslot", channel).strip()
    target = next(node for node in redis_cluster.nodes if node.port != port)
    target_id = redis_cluster.cli(target, "cluster", "myid").strip()
    source = next(node for node in redis_cluster.nodes if node.port == port)
    others = [node for node in redis_cluster.nodes if node not in (target, source)]
    # the new owner first, the old one last, as in a real resharding; the slot
    # holds no keys (a channel is not a key), so nothing needs MIGRATE
    for node in [target, *others, source]:
        answer = redis_cluster.cli(node, "cluster", "setslot", slot, "node", target_id)
        assert answer.strip() == "OK", answer
    wait_until(lambda: worker_channels(redis_cluster).get(channel) == target.port, 20,
               what="the worker to resubscribe on the slot's new owner")
    deadline = time.monotonic() + 20
    while not await pairs_deliver(servers):
        assert time.monotonic() < deadline, "delivery did not recover after the slot moved"
        await asyncio.sleep(0.5)


async def test_a_shard_killed_and_restarted(deployment):
    redis_cluster, servers = deployment
    a, b = servers
    assert await pairs_deliver(servers)
    # the shard that carries a worker's own channel
    port = next(iter(worker_channels(redis_cluster).values()))
    victim = next(node for node in redis_cluster.nodes if node.port == port)
    downs = (a.logs() + b.logs()).count("Redis bus down")
    victim.kill()
    wait_until(lambda: (a.logs() + b.logs()).count("Redis bus down") > downs, 20,
               what="the worker subscribed there to notice")
    victim.start()  # it keeps its nodes.conf: the same node, the same slots
    redis_cluster.wait_ok()
    wait_until(lambda: len(worker_channels(redis_cluster)) == 4, 30,
               what="every worker subscribed again")
    for server in servers:
        wait_until(lambda s=server: all_workers_healthy(s, 2), 30, what="healthy workers")
    deadline = time.monotonic() + 20
    while not await pairs_deliver(servers, users=8):
        assert time.monotonic() < deadline, "delivery did not recover after the restart"
        await asyncio.sleep(0.5)
    assert "Redis bus reconnected and resubscribed" in a.logs() + b.logs()


async def test_a_connection_torn_down_mid_command_is_a_connection_error(deployment,
                                                                       monkeypatch):
    """While a node restarts, a command can meet a connection another one is
    tearing down; redis-py before 8.2 then failed on the cleared stream with
    an AttributeError (later versions still let one through from a
    transport that is not yet closing: redis-py #4287). The cluster client
    reports it as a connection error, which every caller treats as an outage
    (a login then is not an internal error)."""
    redis_cluster, _servers = deployment
    client = redis_client(redis_cluster.url, 2.0)
    try:
        assert await client.set("torn-down", "1")

        async def writer_cleared(connection, command):
            raise AttributeError("'NoneType' object has no attribute 'writelines'")

        monkeypatch.setattr(AbstractConnection, "_send_packed_command", writer_cleared)
        with pytest.raises(RedisConnectionError, match="torn down mid-command"):
            await client.get("torn-down")
        monkeypatch.undo()
        assert await client.get("torn-down") == b"1", "the next command reconnects"
    finally:
        await client.aclose()
