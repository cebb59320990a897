"""PROTOCOL section 10: the HTTP API for users, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from harness.http import ApiClient
from harness.wsclient import authed


@pytest.fixture
def chat(io_loop, start_server, database_url):
    return io_loop.run_sync(lambda: start_server(database_url=database_url,
                                                 allowed_origins=("https://app.example",)))


def api(server, user_id: str | None) -> ApiClient:
    return ApiClient(server.http_url, server.secret, user_id)


async def send(client, content: str, **target) -> dict:
    ack = await client.request({"type": "send_message", "content": content, **target})
    assert ack["type"] == "message_sent", ack
    return ack["data"]


# -- authentication and the error shape ---------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nonsense"},
                                     {"Authorization": "Basic YWxpY2U6eA=="},
                                     {"Authorization": "Bearer "}])
async def test_every_user_endpoint_needs_a_valid_bearer_token(chat, headers):
    anonymous = api(chat, None)
    for method, path in (("GET", "/api/v1/conversations"),
                         ("GET", "/api/v1/conversations/c_x"),
                         ("GET", "/api/v1/conversations/c_x/messages"),
                         ("POST", "/api/v1/conversations"),
                         ("POST", "/api/v1/conversations/c_x/read")):
        answer = await anonymous.call(method, path, headers=headers)
        assert answer.status == 401, (method, path)
        assert set(answer.body) == {"code", "error"}
        assert answer.body["code"] == "unauthorized"


async def test_an_expired_token_is_refused_like_on_the_socket(chat):
    from tornchat.auth import mint_token

    expired = mint_token(chat.secret, "alice", ttl_seconds=-10)
    answer = await api(chat, None).get("/api/v1/conversations", token=expired)
    assert answer.status == 401 and answer.body["code"] == "unauthorized"


async def test_unknown_paths_and_methods_answer_in_the_same_error_shape(chat):
    alice = api(chat, "alice")
    missing = await alice.get("/api/v1/nothing-here")
    assert missing.status == 404 and missing.body["code"] == "not_found"
    wrong_method = await alice.call("DELETE", "/api/v1/conversations")
    assert wrong_method.status == 405 and set(wrong_method.body) == {"code", "error"}
    assert "GET" in wrong_method.headers["Allow"]
    post_document = await alice.post("/api/v1/openapi.json", {})
    assert post_document.status == 405 and set(post_document.body) == {"code", "error"}
    refused = await api(chat, None).get("/api/v1/conversations")
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")


# -- conversations ----------------------------------------------------------

async def test_find_or_create_answers_201_then_200_with_the_conversation_shape(chat):
    alice = api(chat, "alice")
    created = await alice.post("/api/v1/conversations", {"recipientIds": ["bob", "carol"]})
    assert created.status == 201
    conversation = created.body
    assert set(conversation) == {"id", "participants", "createdAt", "lastMessageAt",
                                 "lastSeq", "lastReadSeq", "unreadCount", "lastMessage"}
    assert conversation["participants"] == ["alice", "bob", "carol"]
    assert (conversation["lastSeq"], conversation["lastReadSeq"],
            conversation["unreadCount"], conversation["lastMessage"]) == (0, 0, 0, None)
    assert conversation["createdAt"].endswith("Z") and len(conversation["createdAt"]) == 24
    again = await api(chat, "carol").post("/api/v1/conversations",
                                          {"recipientIds": ["alice", "bob"]})
    assert again.status == 200 and again.body["id"] == conversation["id"]


@pytest.mark.parametrize("body", [None, [], {"recipientIds": []}, {"recipientIds": "bob"},
                                  {"recipientIds": [""]}, {"recipientIds": ["alice"]},
                                  {"recipientIds": ["x" * 129]}, b"{not json"])
async def test_find_or_create_refuses_a_malformed_body(chat, body):
    answer = await api(chat, "alice").post("/api/v1/conversations", body)
    assert answer.status == 400 and answer.body["code"] == "invalid_request", answer.body


async def test_one_conversation_carries_unread_and_last_message_per_reader(chat):
    alice_ws = await authed(chat.url, chat.secret, "alice")
    first = await send(alice_ws, "one", recipientIds=["bob"])
    last = await send(alice_ws, "two", conversationId=first["conversationId"])
    path = f"/api/v1/conversations/{first['conversationId']}"
    as_alice = (await api(chat, "alice").get(path)).body
    as_bob = (await api(chat, "bob").get(path)).body
    # a send moves the sender's own read position to its message
    assert (as_alice["lastSeq"], as_alice["lastReadSeq"], as_alice["unreadCount"]) == (2, 2, 0)
    assert (as_bob["lastSeq"], as_bob["lastReadSeq"], as_bob["unreadCount"]) == (2, 0, 2)
    assert as_bob["lastMessage"] == last
    assert as_bob["lastMessageAt"] == last["createdAt"]


async def test_a_conversation_of_others_is_forbidden_and_an_unknown_one_not_found(chat):
    conversation = (await api(chat, "alice").post("/api/v1/conversations",
                                                   {"recipientIds": ["bob"]})).body
    for path in ("", "/messages"):
        forbidden = await api(chat, "mallory").get(
            f"/api/v1/conversations/{conversation['id']}{path}")
        assert forbidden.status == 403 and forbidden.body["code"] == "forbidden"
        missing = await api(chat, "alice").get(f"/api/v1/conversations/c_nope{path}")
        assert missing.status == 404 and missing.body["code"] == "not_found"
    read = await api(chat, "mallory").post(f"/api/v1/conversations/{conversation['id']}/read",
                                           {"seq": 1})
    assert read.status == 403


async def test_the_list_is_newest_first_and_pages_by_cursor_without_repeats(chat):
    alice_ws = await authed(chat.url, chat.secret, "alice")
    ids = []
    for index in range(7):
        message = await send(alice_ws, f"hi {index}", recipientIds=[f"user{index}"])
        ids.append(message["conversationId"])
    alice = api(chat, "alice")
    first = (await alice.get("/api/v1/conversations?limit=3")).body
    assert [c["id"] for c in first["conversations"]] == ids[::-1][:3]
    assert first["nextCursor"] is not None
    # conversation 0 (on a later page) moves to the top while we page: the pages
    # neither repeat nor skip any conversation that did not move
    await send(alice_ws, "news", conversationId=ids[0])
    seen = [c["id"] for c in first["conversations"]]
    cursor = first["nextCursor"]
    while cursor is not None:
        page = (await alice.get(f"/api/v1/conversations?limit=3&cursor={cursor}")).body
        seen += [c["id"] for c in page["conversations"]]
        cursor = page["nextCursor"]
    assert seen == ids[::-1][:6]  # 6..1; 0 moved above the first page
    top = (await alice.get("/api/v1/conversations?limit=1")).body
    assert top["conversations"][0]["id"] == ids[0]
    assert top["conversations"][0]["lastMessage"]["content"] == "news"


async def test_an_empty_list_and_the_list_bounds(chat):
    alice = api(chat, "alice")
    assert (await alice.get("/api/v1/conversations")).body == {"conversations": [],
                                                               "nextCursor": None}
    for query in ("limit=0", "limit=101", "limit=x", "limit=1.5", "cursor=bogus",
                  "cursor=WzEsMl0"):
        answer = await alice.get(f"/api/v1/conversations?{query}")
        assert answer.status == 400 and answer.body["code"] == "invalid_request", query
    assert (await alice.get("/api/v1/conversations?limit=100")).status == 200


# -- history ----------------------------------------------------------------

async def _conversation_with(chat, count: int) -> str:
    alice_ws = await authed(chat.url, chat.secret, "alice")
    first = await send(alice_ws, "m1", recipientIds=["bob"])
    for seq in range(2, count + 1):
        await send(alice_ws, f"m{seq}", conversationId=first["conversationId"])
    return first["conversationId"]


async def test_history_pages_are_ascending_contiguous_and_exclusive_of_bounds(chat):
    conversation_id = await _conversation_with(chat, 12)
    bob = api(chat, "bob")

    async def page(query: str) -> tuple[list[int], bool, bool, int]:
        body = (await bob.get(f"/api/v1/conversations/{conversation_id}/messages?{query}")).body
        return ([m["seq"] for m in body["messages"]], body["hasMoreBefore"],
                body["hasMoreAfter"], body["lastSeq"])

    assert await page("limit=5") == ([8, 9, 10, 11, 12], True, False, 12)
    assert await page("") == (list(range(1, 13)), False, False, 12)
    assert await page("limit=5&beforeSeq=8") == ([3, 4, 5, 6, 7], True, True, 12)
    assert await page("limit=5&beforeSeq=3") == ([1, 2], False, True, 12)
    assert await page("limit=5&afterSeq=2") == ([3, 4, 5, 6, 7], True, True, 12)
    assert await page("limit=5&afterSeq=10") == ([11, 12], True, False, 12)
    assert await page("limit=5&afterSeq=3&beforeSeq=6") == ([4, 5], True, True, 12)
    assert await page("limit=2&afterSeq=3&beforeSeq=9") == ([4, 5], True, True, 12)
    assert await page("afterSeq=12") == ([], True, False, 12)
    assert await page("beforeSeq=1") == ([], False, True, 12)
    assert await page("afterSeq=0&limit=1") == ([1], False, True, 12)
    assert await page("afterSeq=5&beforeSeq=6") == ([], True, True, 12)
    assert await page("afterSeq=40") == ([], True, False, 12)
    body = (await bob.get(f"/api/v1/conversations/{conversation_id}/messages?limit=1")).body
    assert set(body["messages"][0]) == {"id", "conversationId", "senderId", "content",
                                        "createdAt", "seq"}
    assert body["messages"][0]["content"] == "m12"


async def test_an_empty_conversation_has_nothing_on_either_side(chat):
    conversation = (await api(chat, "alice").post("/api/v1/conversations",
                                                   {"recipientIds": ["bob"]})).body
    for query in ("", "afterSeq=5", "beforeSeq=0", "beforeSeq=3&afterSeq=1"):
        body = (await api(chat, "bob").get(
            f"/api/v1/conversations/{conversation['id']}/messages?{query}")).body
        assert body == {"messages": [], "hasMoreBefore": False, "hasMoreAfter": False,
                        "lastSeq": 0}, query


async def test_participants_are_sorted_by_code_point_whatever_the_collation(chat):
    created = await api(chat, "alice").post("/api/v1/conversations",
                                            {"recipientIds": ["Bob", "_carl", "Zoe"]})
    assert created.body["participants"] == ["Bob", "Zoe", "_carl", "alice"]
    chat.app.store._participants = type(chat.app.store._participants)()  # cold cache
    again = await api(chat, "Zoe").get(f"/api/v1/conversations/{created.body['id']}")
    assert again.body["participants"] == ["Bob", "Zoe", "_carl", "alice"]


async def test_history_bounds_are_checked(chat):
    conversation_id = await _conversation_with(chat, 1)
    bob = api(chat, "bob")
    for query in ("limit=0", "limit=201", "beforeSeq=-1", "afterSeq=x", "limit=",
                  "limit=%2B5", "limit=1e1", "limit=%D9%A3"):
        answer = await bob.get(f"/api/v1/conversations/{conversation_id}/messages?{query}")
        assert answer.status == 400 and answer.body["code"] == "invalid_request", query
    ok = await bob.get(f"/api/v1/conversations/{conversation_id}/messages?limit=200")
    assert ok.status == 200


# -- read position ----------------------------------------------------------

async def test_mark_read_over_http_clamps_moves_forward_only_and_tells_the_sockets(chat):
    conversation_id = await _conversation_with(chat, 5)
    alice_ws = await authed(chat.url, chat.secret, "alice")
    bob_ws = await authed(chat.url, chat.secret, "bob")
    bob = api(chat, "bob")
    path = f"/api/v1/conversations/{conversation_id}/read"

    answer = await bob.post(path, {"seq": 3})
    assert (answer.status, answer.body) == (200, {"lastReadSeq": 3, "unreadCount": 2})
    to_bob = await bob_ws.expect("read")  # the reader's own sockets learn its unread count
    assert "requestId" not in to_bob
    assert to_bob["data"]["unreadCount"] == 2
    to_alice = await alice_ws.expect("read")
    assert set(to_alice["data"]) == {"conversationId", "userId", "lastReadSeq", "readAt"}
    assert (to_alice["data"]["userId"], to_alice["data"]["lastReadSeq"]) == ("bob", 3)

    assert (await bob.post(path, {"seq": 2})).body == {"lastReadSeq": 3, "unreadCount": 2}
    assert (await bob.post(path, {"seq": 99})).body == {"lastReadSeq": 5, "unreadCount": 0}
    assert (await bob_ws.expect("read"))["data"]["lastReadSeq"] == 5
    assert (await alice_ws.expect("read"))["data"]["lastReadSeq"] == 5
    await alice_ws.nothing_within(0.2)  # the move to 2 moved nothing: nobody was told

    for body in ({}, {"seq": -1}, {"seq": "3"}, {"seq": 1.5}, {"seq": True}, [1]):
        bad = await bob.post(path, body)
        assert bad.status == 400 and bad.body["code"] == "invalid_request", body
    view = (await bob.get(f"/api/v1/conversations/{conversation_id}")).body
    assert (view["lastReadSeq"], view["unreadCount"]) == (5, 0)


# -- CORS -------------------------------------------------------------------

async def test_allowed_origins_get_cors_headers_and_a_preflight_others_get_none(chat):
    alice = api(chat, "alice")
    allowed = await alice.get("/api/v1/conversations",
                              headers={"Origin": "https://app.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Origin" in allowed.headers.get("Vary", "")
    refused = await alice.get("/api/v1/conversations", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in refused.headers

    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    answer = await alice.call("OPTIONS", "/api/v1/conversations/c_1/read", headers=preflight)
    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    assert "authorization" in answer.headers["Access-Control-Allow-Headers"].lower()
    other = await alice.call("OPTIONS", "/api/v1/conversations",
                             headers={**preflight, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert not any(name.startswith("Access-Control") for name in other.headers)

