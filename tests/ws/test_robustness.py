"""Edge safety: secrets stay out of logs, unexpected errors never kill a socket."""

from __future__ import annotations

import logging

from harness.wsclient import WsClient, authed
from tornchat.auth import mint_token
from tornchat.storage.store import ChatStore


async def test_tokens_and_message_content_never_reach_info_logs(server, caplog):
    caplog.set_level(logging.INFO)
    good = mint_token(server.secret, "alice")
    client = await WsClient.connect(server.url)
    await client.request({"type": "auth", "token": good})
    await client.request({"type": "send_message", "recipientIds": ["bob"],
                          "content": "top secret words"})
    bad = mint_token("some-other-secret-but-long-enough!!", "mallory")
    intruder = await WsClient.connect(server.url)
    await intruder.request({"type": "auth", "token": bad})
    await intruder.wait_closed()

    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "authentication failed" in logged and "connection authenticated" in logged
    for secret in (good, bad, good.split(".")[2], "top secret words", server.secret):
        assert secret not in logged


class ExplodingStore(ChatStore):
    """A store with a bug: the typing lookup raises an unexpected error."""

    def member_participants(self, conversation_id: str, user_id: str) -> tuple[str, ...]:
        raise ZeroDivisionError("bug")


async def test_an_unexpected_error_becomes_an_error_frame_and_the_socket_stays(server, caplog):
    server.app.store.__class__ = ExplodingStore
    client = await authed(server.url, server.secret, "alice")
    reply = await client.request({"type": "typing", "conversationId": "c_1"})
    assert reply == {"type": "error", "code": "internal_error",
                     "error": "Internal server error"}
    assert await client.request({"type": "ping"}) == {"type": "pong"}
    assert any("unexpected error" in r.getMessage() and r.exc_info for r in caplog.records)
