"""PROTOCOL section 15: the server API for backends (one process; across
instances in tests/fanout/test_cluster.py)."""

from __future__ import annotations

import pytest

from harness.http import ApiClient
from harness.wsclient import authed

KEY = "k" * 40


@pytest.fixture
def chat(io_loop, start_server):
    return io_loop.run_sync(lambda: start_server(api_key=KEY))


async def call(server, path: str, body, key: str | None = KEY, **kwargs):
    headers = {"X-API-Key": key} if key is not None else {}
    return await ApiClient(server.http_url, server.secret).post(path, body, headers=headers,
                                                                **kwargs)


async def test_the_server_api_is_absent_without_a_key(server):
    for path in ("/api/v1/server/messages", "/api/v1/server/users/bob/disconnect"):
        answer = await call(server, path, {}, key="whatever")
        assert answer.status == 404 and answer.body["code"] == "not_found"


async def test_only_the_key_opens_it_and_it_opens_nothing_else(chat):
    body = {"senderId": "alice", "recipientIds": ["bob"], "content": "hi"}
    for key in (None, "", "k" * 39, "x" * 40, KEY + "x"):
        answer = await call(chat, "/api/v1/server/messages", body, key=key)
        assert answer.status == 401 and answer.body["code"] == "unauthorized", key
    jwt_only = await ApiClient(chat.http_url, chat.secret, "alice").post(
        "/api/v1/server/messages", body)
    assert jwt_only.status == 401  # a user's token is not the key
    as_user = await ApiClient(chat.http_url, chat.secret).get(
        "/api/v1/conversations", headers={"X-API-Key": KEY})
    assert as_user.status == 401  # and the key is not a user
    as_bearer = await ApiClient(chat.http_url, chat.secret).get(
        "/api/v1/conversations", token=KEY)
    assert as_bearer.status == 401


async def test_a_posted_message_reaches_every_participant_the_sender_included(chat):
    alice = await authed(chat.url, chat.secret, "alice")
    alice_phone = await authed(chat.url, chat.secret, "alice")
    bob = await authed(chat.url, chat.secret, "bob")
    answer = await call(chat, "/api/v1/server/messages",
                        {"senderId": "alice", "recipientIds": ["bob"], "content": "from the bot",
                         "clientMessageId": "job-1"})
    assert answer.status == 201
    message = answer.body["message"]
    assert (message["senderId"], message["content"], message["seq"]) == ("alice",
                                                                         "from the bot", 1)
    for client in (alice, alice_phone, bob):
        assert await client.recv() == {"type": "new_message", "data": message}
    again = await call(chat, "/api/v1/server/messages",
                       {"senderId": "alice", "conversationId": message["conversationId"],
                        "content": "from the bot", "clientMessageId": "job-1"})
    assert again.status == 200 and again.body["message"] == message  # idempotent
    stored = chat.app.store.messages_of(message["conversationId"])
    assert [m.id for m in stored] == [message["id"]]


@pytest.mark.parametrize(("body", "status"), [
    ({"recipientIds": ["bob"], "content": "x"}, 400),
    ({"senderId": "", "recipientIds": ["bob"], "content": "x"}, 400),
    ({"senderId": "alice", "content": "x"}, 400),
    ({"senderId": "alice", "recipientIds": ["bob"], "content": " "}, 400),
    ({"senderId": "alice", "recipientIds": ["bob"], "conversationId": "c", "content": "x"},
     400),
    ({"senderId": "alice", "conversationId": "c_missing", "content": "x"}, 404),
])
async def test_a_bad_post_gets_a_clear_error(chat, body, status):
    answer = await call(chat, "/api/v1/server/messages", body)
    assert answer.status == status, answer.body
    assert set(answer.body) == {"code", "error"}


async def test_a_sender_outside_the_conversation_is_forbidden(chat):
    first = await call(chat, "/api/v1/server/messages",
                       {"senderId": "alice", "recipientIds": ["bob"], "content": "x"})
    answer = await call(chat, "/api/v1/server/messages",
                        {"senderId": "mallory", "content": "y",
                         "conversationId": first.body["message"]["conversationId"]})
    assert answer.status == 403 and answer.body["code"] == "forbidden"


async def test_disconnect_closes_every_connection_of_the_user_with_4003(chat):
    bobs = [await authed(chat.url, chat.secret, "bob") for _ in range(3)]
    carol = await authed(chat.url, chat.secret, "carol")
    answer = await call(chat, "/api/v1/server/users/bob/disconnect", None)
    assert answer.status == 200 and answer.body == {"closed": 3}
    for client in bobs:
        assert await client.recv() == {"type": "auth_error", "error": "Disconnected by server"}
        assert await client.wait_closed() == 4003
    assert await carol.request({"type": "ping"}) == {"type": "pong"}
    nobody = await call(chat, "/api/v1/server/users/nobody/disconnect", None)
    assert nobody.body == {"closed": 0}


async def test_a_session_still_authenticating_does_not_survive_a_disconnect(chat):
    """The disconnect lands while the session's slot is being claimed."""
    import asyncio

    from harness.wsclient import WsClient
    from tornchat.auth import mint_token

    slots = chat.app.slots
    acquire = slots.acquire
    claiming, go_on = asyncio.Event(), asyncio.Event()

    async def slow_acquire(user_id, connection_id):
        claiming.set()
        await go_on.wait()
        return await acquire(user_id, connection_id)

    slots.acquire = slow_acquire
    client = await WsClient.connect(chat.url)
    await client.send({"type": "auth", "token": mint_token(chat.secret, "bob")})
    await asyncio.wait_for(claiming.wait(), 5)
    answer = await call(chat, "/api/v1/server/users/bob/disconnect", None)
    assert answer.status == 200
    go_on.set()
    assert await client.recv() == {"type": "auth_error", "error": "Disconnected by server"}
    assert await client.wait_closed() == 4003


async def test_a_server_api_401_names_the_key_as_the_credential(chat):
    answer = await call(chat, "/api/v1/server/messages", {}, key=None)
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("ApiKey")
