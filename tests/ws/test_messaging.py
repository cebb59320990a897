"""PROTOCOL sections 3 and 4: sending, fan-out, typing, ping, every error code."""

from __future__ import annotations

import asyncio

from harness.wsclient import WsClient, authed


async def test_send_by_recipients_acks_sender_and_delivers_to_every_other_connection(server):
    alice = await authed(server.url, server.secret, "alice")
    alice_phone = await authed(server.url, server.secret, "alice")
    bob = await authed(server.url, server.secret, "bob")
    carol = await authed(server.url, server.secret, "carol")

    ack = await alice.request({"type": "send_message", "recipientIds": ["bob", "carol"],
                               "content": "Hello, team!", "clientMessageId": "m-1"})
    assert ack["type"] == "message_sent"
    assert ack["clientMessageId"] == "m-1"
    message = ack["data"]
    assert set(message) == {"id", "conversationId", "senderId", "content", "createdAt", "seq"}
    assert message["senderId"] == "alice"
    assert message["content"] == "Hello, team!"
    assert message["seq"] == 1
    assert message["id"].startswith("msg_")
    assert message["createdAt"].endswith("Z") and len(message["createdAt"]) == 24

    for receiver in (alice_phone, bob, carol):
        assert await receiver.recv() == {"type": "new_message", "data": message}
    await alice.nothing_within(0.2)  # the sending connection only gets message_sent


async def test_same_participant_set_reuses_the_conversation_and_seq_grows(server):
    alice = await authed(server.url, server.secret, "alice")
    first = await alice.request({"type": "send_message", "recipientIds": ["bob"],
                                 "content": "one"})
    second = await alice.request({"type": "send_message", "recipientIds": ["bob", "alice"],
                                  "content": "two"})
    bob = await authed(server.url, server.secret, "bob")
    third = await bob.request({"type": "send_message", "recipientIds": ["alice"],
                               "content": "three"})
    ids = {first["data"]["conversationId"], second["data"]["conversationId"],
           third["data"]["conversationId"]}
    assert len(ids) == 1
    assert [f["data"]["seq"] for f in (first, second, third)] == [1, 2, 3]
    assert (await alice.expect("new_message"))["data"] == third["data"]

    group = await alice.request({"type": "send_message", "recipientIds": ["bob", "carol"],
                                 "content": "group"})
    assert group["data"]["conversationId"] not in ids
    assert group["data"]["seq"] == 1


async def test_send_by_conversation_id_reaches_the_participants(server):
    alice = await authed(server.url, server.secret, "alice")
    bob = await authed(server.url, server.secret, "bob")
    first = await alice.request({"type": "send_message", "recipientIds": ["bob"],
                                 "content": "hi"})
    await bob.expect("new_message")
    conversation_id = first["data"]["conversationId"]
    reply = await bob.request({"type": "send_message", "conversationId": conversation_id,
                               "content": "Hello again"})
    assert reply["type"] == "message_sent"
    delivered = await alice.expect("new_message")
    assert delivered["data"]["seq"] == 2
    assert delivered["data"]["senderId"] == "bob"


async def test_non_participant_gets_forbidden_and_unknown_conversation_not_found(server):
    alice = await authed(server.url, server.secret, "alice")
    mallory = await authed(server.url, server.secret, "mallory")
    first = await alice.request({"type": "send_message", "recipientIds": ["bob"],
                                 "content": "private"})
    conversation_id = first["data"]["conversationId"]

    reply = await mallory.request({"type": "send_message", "conversationId": conversation_id,
                                   "content": "let me in", "clientMessageId": "x"})
    assert (reply["type"], reply["code"], reply["clientMessageId"]) == ("error", "forbidden", "x")
    reply = await mallory.request({"type": "typing", "conversationId": conversation_id})
    assert reply["code"] == "forbidden"
    reply = await mallory.request({"type": "send_message", "conversationId": "c_missing",
                                   "content": "hello?"})
    assert reply["code"] == "not_found"
    reply = await mallory.request({"type": "typing", "conversationId": "c_missing"})
    assert reply["code"] == "not_found"


async def test_malformed_frames_get_errors_and_the_connection_stays_open(server):
    client = await authed(server.url, server.secret, "alice")
    cases = [
        ("not json", "invalid_json"),
        ("[1, 2, 3]", "invalid_json"),
        (b"\x00\x01binary", "invalid_message"),
        ({"type": "dance"}, "invalid_message"),
        ({"no": "type"}, "invalid_message"),
        ({"type": "send_message", "content": "no target"}, "invalid_message"),
        ({"type": "send_message", "recipientIds": ["bob"], "conversationId": "c_1",
          "content": "both"}, "invalid_message"),
        ({"type": "send_message", "recipientIds": [], "content": "empty list"},
         "invalid_message"),
        ({"type": "send_message", "recipientIds": ["alice"], "content": "only me"},
         "invalid_message"),
        ({"type": "send_message", "recipientIds": [7], "content": "bad id"}, "invalid_message"),
        ({"type": "send_message", "recipientIds": ["bob"], "content": "   "}, "invalid_message"),
        ({"type": "send_message", "recipientIds": ["bob"], "content": 5}, "invalid_message"),
        ({"type": "send_message", "recipientIds": ["bob"], "content": "x" * 4001},
         "invalid_message"),
        ({"type": "send_message", "recipientIds": ["bob"], "content": "hi",
          "clientMessageId": "y" * 65}, "invalid_message"),
        ({"type": "typing"}, "invalid_message"),
        ({"type": "send_message", "recipientIds": ["bob"], "content": "nul \u0000 inside"},
         "invalid_message"),
        ('{"type": "send_message", "recipientIds": ["bob"], "content": "lone \\ud800"}',
         "invalid_message"),
        ({"type": "send_message", "recipientIds": ["carol\u001fbob"], "content": "forge"},
         "invalid_message"),
        ({"type": "typing", "conversationId": "c\n1"}, "invalid_message"),
    ]
    for frame, code in cases:
        reply = await client.request(frame)
        assert reply["type"] == "error", (frame, reply)
        assert reply["code"] == code, (frame, reply)
        assert reply["error"]
    assert (await client.request({"type": "ping"})) == {"type": "pong"}


async def test_content_at_the_length_limit_is_accepted(server):
    client = await authed(server.url, server.secret, "alice")
    reply = await client.request({"type": "send_message", "recipientIds": ["bob"],
                                  "content": "x" * 4000})
    assert reply["type"] == "message_sent"


async def test_binary_frame_before_auth_is_rejected_but_connection_stays_open(server):
    client = await WsClient.connect(server.url)
    reply = await client.request(b"\x01\x02")
    assert reply["code"] == "invalid_message"
    from tornchat.auth import mint_token
    reply = await client.request({"type": "auth", "token": mint_token(server.secret, "u1")})
    assert reply["type"] == "auth_success"


async def test_retry_with_the_same_client_message_id_returns_the_original(server):
    alice = await authed(server.url, server.secret, "alice")
    bob = await authed(server.url, server.secret, "bob")
    frame = {"type": "send_message", "recipientIds": ["bob"], "content": "once",
             "clientMessageId": "retry-me"}
    first = await alice.request(frame)
    await bob.expect("new_message")
    again = await alice.request(frame)
    assert again == first
    await bob.nothing_within(0.2)  # a duplicate is not delivered twice
    messages = server.app.store.messages_of(first["data"]["conversationId"])
    assert [m.id for m in messages] == [first["data"]["id"]]


async def test_a_burst_is_stored_and_delivered_in_gap_free_seq_order(server):
    alice = await authed(server.url, server.secret, "alice")
    bob = await authed(server.url, server.secret, "bob")
    carol = await authed(server.url, server.secret, "carol")
    first = await alice.request({"type": "send_message", "recipientIds": ["bob", "carol"],
                                 "content": "start"})
    conversation_id = first["data"]["conversationId"]
    await bob.expect("new_message")
    await carol.expect("new_message")

    async def burst(client: WsClient, name: str) -> None:
        for i in range(40):
            await client.send({"type": "send_message", "conversationId": conversation_id,
                               "content": f"{name}-{i}"})

    await asyncio.gather(burst(alice, "a"), burst(bob, "b"))
    received = [(await carol.expect("new_message"))["data"] for _ in range(80)]
    assert [m["seq"] for m in received] == list(range(2, 82))
    for name in ("a", "b"):
        own = [m["content"] for m in received if m["content"].startswith(name)]
        assert own == [f"{name}-{i}" for i in range(40)]


async def test_typing_reaches_the_other_participants_only(server):
    alice = await authed(server.url, server.secret, "alice")
    alice_phone = await authed(server.url, server.secret, "alice")
    bob = await authed(server.url, server.secret, "bob")
    first = await alice.request({"type": "send_message", "recipientIds": ["bob"],
                                 "content": "hi"})
    await bob.expect("new_message")
    await alice_phone.expect("new_message")
    conversation_id = first["data"]["conversationId"]
    await alice.send({"type": "typing", "conversationId": conversation_id})
    assert await bob.recv() == {"type": "typing", "data": {"conversationId": conversation_id,
                                                           "userId": "alice"}}
    await alice.nothing_within(0.2)
    await alice_phone.nothing_within(0.05)


async def test_ping_frame_is_answered_with_pong(server):
    client = await authed(server.url, server.secret, "alice")
    assert await client.request({"type": "ping"}) == {"type": "pong"}


async def test_connection_exceeding_its_rate_gets_rate_limited(start_server):
    server = await start_server(rate_limit_per_second=1.0, rate_limit_burst=4)
    client = await authed(server.url, server.secret, "alice")  # the auth frame counts
    replies = [await client.request({"type": "ping"}) for _ in range(5)]
    assert [r["type"] for r in replies[:3]] == ["pong"] * 3
    assert replies[3]["code"] == "rate_limited"
    # malformed and binary frames count too, and a limited send echoes its client id
    for frame in ("not json", b"\x00", {"type": "send_message", "recipientIds": ["bob"],
                                         "content": "hi", "clientMessageId": "k9"}):
        reply = await client.request(frame)
        assert reply["code"] == "rate_limited"
    assert reply["clientMessageId"] == "k9"


async def test_unauthenticated_connections_are_rate_limited_too(start_server):
    server = await start_server(rate_limit_per_second=1.0, rate_limit_burst=2)
    client = await WsClient.connect(server.url)
    replies = [await client.request("garbage") for _ in range(3)]
    assert [r["code"] for r in replies] == ["invalid_json", "invalid_json", "rate_limited"]


async def test_frame_over_the_size_limit_closes_with_1009(start_server):
    server = await start_server(max_frame_bytes=1024)
    client = await authed(server.url, server.secret, "alice")
    await client.send({"type": "send_message", "recipientIds": ["bob"], "content": "x" * 2000})
    assert await client.wait_closed() == 1009


async def test_delivery_survives_a_recipient_socket_that_is_gone(server):
    alice = await authed(server.url, server.secret, "alice")
    gone = await authed(server.url, server.secret, "bob")
    bob = await authed(server.url, server.secret, "bob")
    # Close the socket under the server's feet, without a close handshake.
    for handler in server.app.registry.connections_of("bob"):
        if handler is not None and handler.connection_id != "":
            handler.ws_connection.stream.close()
            break
    gone.close()
    reply = await alice.request({"type": "send_message", "recipientIds": ["bob"],
                                 "content": "still there?"})
    assert reply["type"] == "message_sent"
    assert (await bob.expect("new_message"))["data"]["content"] == "still there?"


async def test_browser_origin_must_be_allowed(start_server):
    server = await start_server(allowed_origins=("https://chat.example.com",))
    from tornado.httpclient import HTTPClientError, HTTPRequest
    ok = await WsClient.connect(HTTPRequest(server.url,
                                            headers={"Origin": "https://chat.example.com"}))
    ok.close()
    try:
        await WsClient.connect(HTTPRequest(server.url, headers={"Origin": "https://evil.test"}))
    except HTTPClientError as exc:
        assert exc.code == 403
    else:
        raise AssertionError("a foreign Origin was accepted")
    no_origin = await WsClient.connect(server.url)  # non-browser clients send none
    no_origin.close()
