"""The benchmark's Node.js peer (loadtest/peer_node: the seed's design with
ws, pg and ioredis) speaks tornchat's protocol well enough for the load
generator: auth, a first message by recipientIds, then by conversationId,
delivered across its two cluster workers through Redis and stored in
PostgreSQL."""

from __future__ import annotations

import shutil

import pytest

from harness.redis_server import private_redis
from harness.services import fresh_postgres_database, unavailable
from harness.wsclient import authed
from loadtest import servers

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
SECRET = "node-seed-peer-test-secret-" + "x" * 16


async def test_the_seed_peer_stores_and_delivers_across_its_workers(tmp_path):
    if shutil.which("node") is None or shutil.which("npm") is None:
        unavailable("Node.js and npm (for loadtest/peer_node)")
    with private_redis(str(tmp_path)) as redis, fresh_postgres_database() as database_url:
        server = servers.node_seed_server(2, database_url, redis.url, SECRET, tmp_path).start()
        try:
            assert len(server.worker_pids()) == 2
            url = f"ws://127.0.0.1:{server.port}/api/v1/chat"
            members = [await authed(url, SECRET, user) for user in ("alice", "bob", "bob")]
            alice, bobs = members[0], members[1:]
            ack = await alice.request({"type": "send_message", "recipientIds": ["bob"],
                                       "content": "hi", "clientMessageId": "k1"})
            assert ack["type"] == "message_sent" and ack["clientMessageId"] == "k1"
            again = await alice.request({"type": "send_message", "content": "again",
                                         "conversationId": ack["data"]["conversationId"]})
            assert again["type"] == "message_sent"
            for bob in bobs:  # on whichever worker each landed
                contents = [(await bob.expect("new_message"))["data"]["content"]
                            for _ in range(2)]
                assert contents == ["hi", "again"]
            assert servers.count_rows(database_url, "seed_message") == 2
            for client in members:
                client.close()
        finally:
            server.stop()
