"""PROTOCOL section 14: a session ends at its token's exp unless refreshed."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from harness.ports import eventually
from harness.wsclient import WsClient
from tornchat.auth import mint_token


async def _connect(server, user_id: str, ttl: int) -> tuple[WsClient, dict]:
    client = await WsClient.connect(server.url)
    reply = await client.request({"type": "auth", "token": mint_token(server.secret, user_id,
                                                                      ttl)})
    assert reply["type"] == "auth_success", reply
    return client, reply


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def test_auth_success_carries_the_tokens_expiry(server):
    before = int(time.time())
    _, reply = await _connect(server, "alice", 3600)
    expires = _epoch(reply["data"]["expiresAt"])
    assert before + 3600 <= expires <= time.time() + 3600
    assert reply["data"]["expiresAt"].endswith(".000Z")


async def test_the_session_ends_at_exp_with_4001(server):
    client, _ = await _connect(server, "alice", 2)
    started = time.monotonic()
    frame = await client.recv(5)
    assert frame == {"type": "auth_error", "error": "Token expired"}
    assert await client.wait_closed() == 4001
    assert time.monotonic() - started < 3.5  # within a second after exp
    for _ in range(50):  # the server side finishes the close handshake
        if server.app.connection_count == 0:
            break
        await asyncio.sleep(0.02)
    assert server.app.connection_count == 0
    assert len(server.app.sessions.expiry) == 0


async def test_a_refresh_moves_the_end_to_the_new_exp(server):
    client, _ = await _connect(server, "alice", 2)
    answer = await client.request({"type": "refresh", "requestId": "r1",
                                   "token": mint_token(server.secret, "alice", 60)})
    assert answer["type"] == "refresh_success" and answer["requestId"] == "r1"
    assert _epoch(answer["data"]["expiresAt"]) >= time.time() + 55
    await client.nothing_within(3.0)  # past the old exp: still open
    assert await client.request({"type": "ping"}) == {"type": "pong"}


async def test_an_invalid_or_foreign_refresh_changes_nothing(server):
    client, _ = await _connect(server, "alice", 2)
    bad = await client.request({"type": "refresh", "token": "nonsense", "requestId": "x"})
    assert (bad["type"], bad["code"], bad["requestId"]) == ("error", "invalid_token", "x")
    expired = await client.request({"type": "refresh",
                                    "token": mint_token(server.secret, "alice", -5)})
    assert expired["code"] == "invalid_token"
    foreign = await client.request({"type": "refresh",
                                    "token": mint_token(server.secret, "mallory", 60)})
    assert foreign["code"] == "forbidden"
    assert await client.recv(4) == {"type": "auth_error", "error": "Token expired"}
    assert await client.wait_closed() == 4001


async def test_sessions_cost_a_wheel_entry_each_not_a_timer(server):
    """One wheel entry per session, no IOLoop timeout per connection."""
    loop = asyncio.get_running_loop()

    def timers() -> int:
        return sum(not handle.cancelled() for handle in getattr(loop, "_scheduled", []))

    timers_before = timers()
    clients = [(await _connect(server, f"user{index}", 3600))[0] for index in range(50)]
    await asyncio.sleep(0.5)  # past the post-auth hold
    assert len(server.app.sessions.expiry) == 50
    assert timers() - timers_before <= 5
    expiry = server.app.sessions.expiry  # its one timer waits for the first exp, in an hour
    assert expiry._timer_key is not None and expiry._timer_key >= loop.time() + 3500
    for client in clients:
        client.close()


async def test_frames_after_the_end_are_not_handled(server):
    """Nothing is stored under an expired token, even from a client that
    ignores the close."""
    client, _ = await _connect(server, "alice", 2)
    assert await client.recv(5) == {"type": "auth_error", "error": "Token expired"}
    await client.send({"type": "send_message", "recipientIds": ["bob"], "content": "late"})
    assert await client.wait_closed() == 4001
    assert server.app.store.database.execute_sql("SELECT count(*) FROM message").fetchone()[0] == 0


async def test_a_token_with_an_exp_past_year_9999_is_refused(server):
    import jwt

    client = await WsClient.connect(server.url)
    token = jwt.encode({"sub": "alice", "exp": 10 ** 13}, server.secret, "HS256")
    reply = await client.request({"type": "auth", "token": token})
    assert reply == {"type": "auth_error", "error": "Invalid token"}
    assert await client.wait_closed() == 4001


async def test_a_session_due_on_the_loops_clock_waits_for_the_wall_clocks_exp(server):
    """The wheel counts on the monotonic clock; if the wall clock was stepped
    back meanwhile, the session is not ended before its ``exp``."""
    client, _ = await _connect(server, "alice", 3600)
    session = next(iter(server.app.sessions))
    sessions = server.app.sessions
    sessions.expiry.discard(session)
    sessions._token_ended(session)  # as if due: the wall clock says an hour is left
    assert session in sessions.expiry
    assert await client.request({"type": "ping"}) == {"type": "pong"}


async def test_a_wall_clock_stepped_forward_ends_sessions_at_exp_not_that_much_later(
        server, monkeypatch):
    """The wheel waits on the monotonic clock; a heartbeat that finds the wall
    clock an hour ahead of it reschedules every expiry from the wall clock."""
    import types

    import tornchat.ws.sessions as sessions_module

    client, _ = await _connect(server, "alice", 3600)
    sessions = server.app.sessions
    await server.app.heartbeat.beat()  # the first beat only takes the offset
    assert sessions.notice_clock_step() == 0  # no step: nothing moves
    assert await client.request({"type": "ping"}) == {"type": "pong"}  # reads the beat's ping
    # its pong is back: the next beat does not drop the session
    await eventually(lambda: not next(iter(sessions)).awaiting_pong, "the pong", timeout=1.0)
    real = time.time
    monkeypatch.setattr(sessions_module, "time", types.SimpleNamespace(
        time=lambda: real() + 3599, monotonic=time.monotonic))
    await server.app.heartbeat.beat()
    assert await client.recv(4) == {"type": "auth_error", "error": "Token expired"}
    assert await client.wait_closed() == 4001
