"""``POST /api/v1/dev/token``: development's token mint (the demo page signs in
with it), absent in production."""

from __future__ import annotations

import time

from harness.http import ApiClient
from harness.wsclient import WsClient
from tornchat.auth import TokenVerifier
from tornchat.contract.timefmt import iso_from_ms


async def mint(server, body):
    return await ApiClient(server.http_url, server.secret).post("/api/v1/dev/token", body)


async def test_in_development_it_mints_a_token_the_socket_accepts(server):
    answer = await mint(server, {"userId": "alice"})
    assert answer.status == 200
    assert set(answer.body) == {"token", "userId", "expiresAt"}
    identity = TokenVerifier(server.secret).identify(answer.body["token"])
    assert identity.user_id == answer.body["userId"] == "alice"
    assert abs(identity.expires_at - (time.time() + 3600)) < 5
    assert answer.body["expiresAt"] == iso_from_ms(int(identity.expires_at * 1000))
    client = await WsClient.connect(server.url)
    reply = await client.request({"type": "auth", "token": answer.body["token"]})
    assert reply["type"] == "auth_success" and reply["data"]["userId"] == "alice"
    client.close()


async def test_the_lifetime_can_be_chosen_within_bounds(server):
    short = await mint(server, {"userId": "bob", "ttlSeconds": 10})
    assert short.status == 200
    assert TokenVerifier(server.secret).identify(short.body["token"]).expires_at < time.time() + 11
    for ttl in (9, 86401, "60", 1.5, True, None):
        answer = await mint(server, {"userId": "bob", "ttlSeconds": ttl})
        assert answer.status == 400 and "ttlSeconds" in answer.body["error"], ttl


async def test_a_bad_user_id_or_body_is_a_readable_400(server):
    for body in ({}, {"userId": ""}, {"userId": "x" * 129}, {"userId": "a\nb"}, {"userId": 7},
                 [1], b"not json"):
        answer = await mint(server, body)
        assert answer.status == 400 and answer.body["code"] == "invalid_request", body


async def test_in_production_it_does_not_exist(io_loop, start_server):
    production = await start_server(env="production")
    answer = await mint(production, {"userId": "alice"})
    assert answer.status == 404 and answer.body["code"] == "not_found"
