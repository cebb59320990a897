"""The demo chat page at /demo, in a real Chromium against a real server: two
people chatting, a server restart in the middle of a conversation, history
paging, a phone-sized window. The page is driven only through its documented
``data-testid`` hooks (docs/demo.md)."""

from __future__ import annotations

import os
import re

import pytest

from harness.server import TEST_SECRET
from tests.web.conftest import PHONE, WIDE, demo_server, post_as
from tornchat.auth import mint_token

try:
    from playwright.sync_api import expect
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("playwright is not installed: pip install playwright", allow_module_level=True)

OWN = re.compile(r"\bown\b")
ONLINE = re.compile(r"\bonline\b")
RECONNECT_MS = 30_000  # the server asks for 5 s at shutdown, plus jitter and start-up


def test_two_people_chat_with_unread_badge_read_receipt_and_typing(server, person):
    group = post_as(server, "carol", "Lunch at noon?", recipients=["alice", "bob"])
    alice = person(server.http_url).sign_in("alice")
    bob = person(server.http_url).sign_in("bob")
    expect(alice.conversations).to_have_count(1)

    chat = alice.start_chat("bob")
    expect(alice.conversations.first).to_have_attribute("data-conversation-id", chat)
    expect(alice.conversation(chat).locator(".presence-dot")).to_have_class(ONLINE)
    alice.send("Hi Bob! Did the deploy go out?")
    expect(alice.message(1)).to_contain_text("Hi Bob! Did the deploy go out?")
    expect(alice.message(1)).to_have_class(OWN)

    # bob has not opened the chat: it appears at the top of his list, unread
    in_bobs_list = bob.conversation(chat)
    expect(bob.conversations.first).to_have_attribute("data-conversation-id", chat)
    expect(in_bobs_list).to_contain_text("alice")
    expect(in_bobs_list).to_contain_text("Did the deploy go out?")
    expect(in_bobs_list.get_by_test_id("unread-count")).to_have_text("1")
    expect(alice.hook("read-receipt")).to_be_hidden()

    # he opens it: the badge clears, and alice sees that he read it
    in_bobs_list.click()
    expect(in_bobs_list).to_have_attribute("aria-selected", "true")
    expect(bob.message(1)).to_contain_text("Hi Bob!")
    expect(bob.message(1)).not_to_have_class(OWN)
    expect(in_bobs_list.get_by_test_id("unread-count")).to_have_text("")
    expect(alice.hook("read-receipt")).to_have_text("Seen")

    bob.send("Yes, ten minutes ago. All green.")
    expect(alice.message(2)).to_contain_text("All green.")
    expect(alice.message(2)).not_to_have_class(OWN)
    alice.send("Great, thanks!")
    expect(bob.message(3)).to_contain_text("Great, thanks!")
    # the receipt sits under alice's last message once bob (who has the chat open) read it
    receipt = alice.hook("read-receipt")
    expect(receipt).to_be_visible()
    assert receipt.evaluate("node => node.previousElementSibling.dataset.seq") == "3"
    assert alice.seqs() == [1, 2, 3]
    assert bob.seqs() == [1, 2, 3]

    # a new message moves its conversation to the top, with its unread count
    post_as(server, "carol", "Table for three at Rosa's", conversation_id=group["conversationId"])
    in_alices_list = alice.conversation(group["conversationId"])
    expect(alice.conversations.first).to_have_attribute(
        "data-conversation-id", group["conversationId"])
    expect(in_alices_list.get_by_test_id("unread-count")).to_have_text("2")
    expect(in_alices_list).to_contain_text("Table for three")

    # typing shows on the other side, naming the typist, and fades without new events;
    # bob types for longer than the client's typing throttle (2 s), which his send
    # above (its fill() is an input event too) may have started
    bob.hook("composer").press_sequentially("one more thing about the release", delay=80)
    expect(alice.hook("typing-indicator")).to_be_visible()
    expect(alice.hook("typing-indicator")).to_have_text("bob is typing…")
    alice.screenshot("demo-chat.png")
    expect(alice.hook("typing-indicator")).to_be_hidden(timeout=8_000)


def test_a_server_restart_loses_and_doubles_nothing(tmp_path, person):
    first = demo_server(tmp_path)
    try:
        alice = person(first.http_url).sign_in("alice")
        bob = person(first.http_url).sign_in("bob")
        chat = alice.start_chat("bob")
        alice.send("Are you there?")
        bob.conversation(chat).click()
        bob.send("here")
        expect(alice.message(2)).to_contain_text("here")

        first.stop()
        expect(alice.status).to_have_text("reconnecting…")
        expect(bob.status).to_have_text("reconnecting…")
        # bob keeps typing while the server is down: the client queues his sends
        bob.send("still here while you restart")
        bob.send("and this one too")
        expect(bob.hook("pending-message")).to_have_count(2)
        second = demo_server(tmp_path, port=first.port)
    finally:
        first.stop()
    try:
        bob.send("sent as the server came back")
        expect(alice.status).to_have_text("connected", timeout=RECONNECT_MS)
        expect(bob.status).to_have_text("connected", timeout=RECONNECT_MS)
        expect(bob.hook("pending-message")).to_have_count(0)
        expected = ["Are you there?", "here", "still here while you restart",
                    "and this one too", "sent as the server came back"]
        for person_page in (alice, bob):
            expect(person_page.messages).to_have_count(len(expected))
            assert person_page.seqs() == [1, 2, 3, 4, 5]
            assert person_page.texts() == expected
        alice.send("welcome back")
        expect(bob.message(6)).to_contain_text("welcome back")
    finally:
        second.stop()


def test_scrolling_up_pages_back_through_the_whole_history(server, person):
    first = post_as(server, "hank", "message 1", recipients=["ivy"])
    for number in range(2, 131):
        post_as(server, "hank", f"message {number}", conversation_id=first["conversationId"])
    ivy = person(server.http_url).sign_in("ivy")
    item = ivy.conversation(first["conversationId"])
    expect(item.get_by_test_id("unread-count")).to_have_text("130")
    item.click()

    # the newest 50 first, scrolled to the bottom
    expect(ivy.messages).to_have_count(50)
    expect(ivy.message(130)).to_be_in_viewport()
    assert ivy.seqs() == list(range(81, 131))
    expect(item.get_by_test_id("unread-count")).to_have_text("")

    scroller = ivy.hook("message-scroller")
    for shown, oldest in ((100, 31), (130, 1)):
        previous_top = ivy.seqs()[0]
        scroller.evaluate("node => { node.scrollTop = 0; }")
        expect(ivy.messages).to_have_count(shown)
        # the view stays where it was: the message that was on top is still in sight
        expect(ivy.message(previous_top)).to_be_in_viewport()
        assert ivy.seqs() == list(range(oldest, 131))
    scroller.evaluate("node => { node.scrollTop = 0; }")
    expect(ivy.page.locator("#history-top")).to_have_text("This is the start of the conversation.")
    assert ivy.texts() == [f"message {number}" for number in range(1, 131)]


def test_a_phone_sized_window_shows_the_list_or_the_chat(server, person):
    kim = person(server.http_url, viewport=PHONE).sign_in("kim")
    lee = person(server.http_url, viewport=WIDE).sign_in("lee")
    new_chat = kim.hook("new-chat-users")
    expect(new_chat).to_be_visible()
    expect(kim.hook("composer")).to_be_hidden()

    chat = kim.start_chat("lee")
    expect(new_chat).to_be_hidden()
    expect(kim.hook("back")).to_be_visible()
    kim.send("Sent from my phone")
    expect(kim.message(1)).to_be_visible()
    expect(lee.conversation(chat)).to_contain_text("Sent from my phone")
    lee.conversation(chat).click()
    lee.send("Got it!")
    expect(kim.message(2)).to_contain_text("Got it!")
    assert kim.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    kim.screenshot("demo-phone.png")

    kim.hook("back").click()
    expect(new_chat).to_be_visible()
    expect(kim.hook("composer")).to_be_hidden()
    expect(kim.conversation(chat)).to_contain_text("Got it!")
    expect(kim.conversation(chat)).to_have_attribute("aria-selected", "false")


def test_signing_in_with_a_pasted_jwt_and_signing_out(server, person):
    judy = person(server.http_url)
    judy.page.goto(server.http_url + "/demo")
    judy.page.get_by_text("Use a JWT instead").click()
    judy.hook("login-jwt").fill(mint_token(TEST_SECRET, "judy"))
    judy.hook("login-submit").click()
    expect(judy.status).to_have_text("connected")
    expect(judy.page.locator("#me-name")).to_have_text("judy")

    judy.hook("sign-out").click()
    expect(judy.hook("login-submit")).to_be_visible()
    expect(judy.status).to_be_hidden()
    # the same window signs in afresh, as someone else with a dev token
    judy.hook("login-jwt").fill("")
    judy.hook("login-user").fill("karl")
    judy.hook("login-submit").click()
    expect(judy.status).to_have_text("connected")
    expect(judy.page.locator("#me-name")).to_have_text("karl")
    expect(judy.conversations).to_have_count(0)
