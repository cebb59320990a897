"""PROTOCOL section 2: two-phase authentication, against the real server."""

from __future__ import annotations

import time

import jwt
import pytest

from harness.wsclient import WsClient, authed
from tornchat.auth import mint_token


async def expect_auth_error(client: WsClient, reason: str, close_code: int = 4001) -> None:
    frame = await client.expect("auth_error")
    assert frame["error"] == reason
    assert await client.wait_closed() == close_code


async def test_valid_token_gets_auth_success_with_user_and_connection_ids(server):
    client = await WsClient.connect(server.url)
    reply = await client.request({"type": "auth", "token": mint_token(server.secret, "u1")})
    assert reply["type"] == "auth_success"
    assert reply["data"]["userId"] == "u1"
    assert reply["data"]["connectionId"].startswith("conn_")


async def test_user_id_comes_from_sub_then_user_id_then_id_claims(server):
    exp = int(time.time()) + 60
    for claims, expected in (({"userId": "u2", "id": "x"}, "u2"), ({"id": "u3"}, "u3")):
        token = jwt.encode({**claims, "exp": exp}, server.secret, "HS256")
        client = await WsClient.connect(server.url)
        reply = await client.request({"type": "auth", "token": token})
        assert reply["data"]["userId"] == expected


async def test_token_signed_with_another_secret_is_rejected_with_4001(server):
    client = await WsClient.connect(server.url)
    forged = mint_token("another-secret-of-32-bytes-length!", "u1")
    await client.send({"type": "auth", "token": forged})
    await expect_auth_error(client, "Invalid token")


async def test_expired_token_is_rejected_with_4001(server):
    token = jwt.encode({"sub": "u1", "exp": int(time.time()) - 10}, server.secret, "HS256")
    client = await WsClient.connect(server.url)
    await client.send({"type": "auth", "token": token})
    await expect_auth_error(client, "Token expired")


async def test_token_without_exp_is_rejected(server):
    token = jwt.encode({"sub": "u1"}, server.secret, "HS256")
    client = await WsClient.connect(server.url)
    await client.send({"type": "auth", "token": token})
    await expect_auth_error(client, "Invalid token")


# the HS512 token is signed with the test secret, shorter than HS512 wants: that is the point
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_alg_none_and_other_algorithms_are_rejected(server):
    exp = int(time.time()) + 60
    for token in (jwt.encode({"sub": "u1", "exp": exp}, None, "none"),
                  jwt.encode({"sub": "u1", "exp": exp}, server.secret, "HS512")):
        client = await WsClient.connect(server.url)
        await client.send({"type": "auth", "token": token})
        await expect_auth_error(client, "Invalid token")


async def test_malformed_or_missing_token_is_rejected(server):
    for frame in ({"type": "auth", "token": "not.a.jwt"}, {"type": "auth"},
                  {"type": "auth", "token": 42}):
        client = await WsClient.connect(server.url)
        await client.send(frame)
        await expect_auth_error(client, "Invalid token")


async def test_no_auth_within_the_timeout_closes_with_4001(server):
    client = await WsClient.connect(server.url)  # auth timeout is 1 s in tests
    frame = await client.recv(timeout=3)
    assert frame == {"type": "auth_error", "error": "Authentication timeout"}
    assert await client.wait_closed() == 4001


async def test_an_auth_that_fails_on_the_server_side_may_be_retried_within_a_new_deadline(
        server, monkeypatch):
    """An internal failure answers ``internal_error`` and leaves the connection
    open: the client may send ``auth`` again, and one that does not is still
    closed at the auth timeout."""
    presence = server.app.presence

    async def broken(user_id: str) -> None:
        raise RuntimeError("presence store broke")

    original = presence.connected
    monkeypatch.setattr(presence, "connected", broken)
    retrying = await WsClient.connect(server.url)
    giving_up = await WsClient.connect(server.url)
    for client, user in ((retrying, "u1"), (giving_up, "u2")):
        reply = await client.request({"type": "auth", "token": mint_token(server.secret, user)})
        assert reply["type"] == "error" and reply["code"] == "internal_error"
        assert await server.app.slots.count(user) == 0  # the slot went back

    monkeypatch.setattr(presence, "connected", original)
    reply = await retrying.request({"type": "auth", "token": mint_token(server.secret, "u1")})
    assert reply["type"] == "auth_success"
    frame = await giving_up.recv(timeout=3)  # auth timeout is 1 s in tests
    assert frame == {"type": "auth_error", "error": "Authentication timeout"}
    assert await giving_up.wait_closed() == 4001
    await retrying.nothing_within(1.5)  # authenticated: no deadline left for it


async def test_any_other_message_before_auth_closes_with_4001(server):
    client = await WsClient.connect(server.url)
    await client.send({"type": "send_message", "recipientIds": ["u2"], "content": "hi"})
    await expect_auth_error(client, "Not authenticated")


async def test_sixth_connection_of_a_user_is_rejected_with_4029(server):
    clients = [await authed(server.url, server.secret, "busy") for _ in range(5)]
    sixth = await WsClient.connect(server.url)
    await sixth.send({"type": "auth", "token": mint_token(server.secret, "busy")})
    await expect_auth_error(sixth, "Too many connections", close_code=4029)
    clients[0].close()
    await clients[0].wait_closed()
    for _ in range(50):  # the freed slot becomes available again
        retry = await WsClient.connect(server.url)
        reply = await retry.request({"type": "auth", "token": mint_token(server.secret, "busy")})
        if reply["type"] == "auth_success":
            break
    else:
        raise AssertionError("slot was not released after close")


async def test_second_auth_on_an_authenticated_connection_is_an_error(server):
    client = await authed(server.url, server.secret, "u1")
    reply = await client.request({"type": "auth", "token": mint_token(server.secret, "u1")})
    assert reply["type"] == "error"
    assert reply["code"] == "already_authenticated"
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_claims_the_contract_does_not_use_do_not_block_auth(server):
    now = int(time.time())
    for claims in ({"sub": 123, "userId": "u9"},          # non-string sub: next claim
                   {"sub": "u9", "aud": "another-service"},
                   {"sub": "u9", "iat": now + 20}):       # issuer clock slightly ahead
        token = jwt.encode({**claims, "exp": now + 60}, server.secret, "HS256")
        client = await WsClient.connect(server.url)
        reply = await client.request({"type": "auth", "token": token})
        assert reply["type"] == "auth_success", (claims, reply)
        assert reply["data"]["userId"] == "u9"


async def test_a_user_id_with_control_characters_is_refused(server):
    token = jwt.encode({"sub": "alice\u001fbob", "exp": int(time.time()) + 60},
                       server.secret, "HS256")
    client = await WsClient.connect(server.url)
    await client.send({"type": "auth", "token": token})
    await expect_auth_error(client, "Invalid token")
