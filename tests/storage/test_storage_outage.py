"""A storage outage: clear ``unavailable`` errors, 503 health, recovery, no loss.

The outage is real: the test's PostgreSQL database stops accepting
connections and its backends are terminated, then it is let back.
"""

from __future__ import annotations

import contextlib
import json

import psycopg2
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from harness.services import POSTGRES_ADMIN_DSN, fresh_postgres_database
from harness.wsclient import authed

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url():
    with fresh_postgres_database() as url:
        yield url


@contextlib.contextmanager
def database_outage(url: str):
    name = url.rsplit("/", 1)[1]
    admin = psycopg2.connect(POSTGRES_ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
    try:
        yield
    finally:
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.close()


async def health(server, path: str = "/health") -> tuple[int, dict]:
    try:
        response = await AsyncHTTPClient().fetch(server.http_url + path)
    except HTTPClientError as exc:
        response = exc.response
    return response.code, json.loads(response.body)


async def test_storage_down_gives_unavailable_then_recovers_without_loss(start_server, pg_url):
    server = await start_server(database_url=pg_url)
    alice = await authed(server.url, server.secret, "alice")
    bob = await authed(server.url, server.secret, "bob")
    first = await alice.request({"type": "send_message", "recipientIds": ["bob"],
                                 "content": "before"})
    await bob.expect("new_message")
    conversation_id = first["data"]["conversationId"]

    with database_outage(pg_url):
        reply = await alice.request({"type": "send_message", "conversationId": conversation_id,
                                     "content": "during", "clientMessageId": "d-1"})
        assert reply["type"] == "error"
        assert reply["code"] == "unavailable"
        assert reply["clientMessageId"] == "d-1"
        await bob.nothing_within(0.2)
        status, body = await health(server)
        assert status == 503
        assert body["dependencies"]["database"] == "down"
        # the liveness endpoint asks no dependency: a probe on it restarts no pod now
        assert await health(server, "/health/live") == (200, {"status": "alive"})
        assert (await alice.request({"type": "ping"})) == {"type": "pong"}

    retry = await alice.request({"type": "send_message", "conversationId": conversation_id,
                                 "content": "during", "clientMessageId": "d-1"})
    assert retry["type"] == "message_sent"
    assert retry["data"]["seq"] == 2
    assert (await bob.expect("new_message"))["data"] == retry["data"]
    status, body = await health(server)
    assert (status, body["dependencies"]["database"]) == (200, "ok")
    stored = server.app.store.messages_of(conversation_id)
    assert [m.content for m in stored] == ["before", "during"]


async def test_storage_down_gives_503_unavailable_over_http_and_on_the_socket(start_server,
                                                                              pg_url):
    """Version 2's reads and read positions fail the same clear way, and work
    again once the database is back."""
    from harness.http import ApiClient

    server = await start_server(database_url=pg_url)
    alice = await authed(server.url, server.secret, "alice")
    first = await alice.request({"type": "send_message", "recipientIds": ["bob"],
                                 "content": "before"})
    conversation_id = first["data"]["conversationId"]
    api = ApiClient(server.http_url, server.secret, "alice")
    with database_outage(pg_url):
        for answer in (await api.get("/api/v1/conversations"),
                       await api.get(f"/api/v1/conversations/{conversation_id}/messages"),
                       await api.post(f"/api/v1/conversations/{conversation_id}/read",
                                      {"seq": 1}),
                       await api.post("/api/v1/conversations", {"recipientIds": ["zed"]})):
            assert answer.status == 503, answer.body
            assert answer.body["code"] == "unavailable"
        reply = await alice.request({"type": "sync", "conversations": {conversation_id: 0},
                                     "requestId": "s"})
        assert (reply["type"], reply["code"], reply["requestId"]) == ("error", "unavailable",
                                                                      "s")
        reply = await alice.request({"type": "mark_read", "conversationId": conversation_id,
                                     "seq": 1})
        assert reply["code"] == "unavailable"
    listed = await api.get("/api/v1/conversations")
    assert listed.status == 200 and listed.body["conversations"][0]["id"] == conversation_id
