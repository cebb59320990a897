// The client against a real tornchat server: sending, receiving, typing, read
// state, presence and the HTTP helpers.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { TornchatError } from "../tornchat.js";
import { sleep, suiteServer, waitFor } from "./support.js";

describe("a connected client", () => {
  const suite = suiteServer({ TORNCHAT_PRESENCE_GRACE: "0.5" });
  const { connect } = suite;

  test("authenticates and reports connected", async () => {
    const alice = await connect("alice");
    assert.equal(alice.state, "connected");
    assert.equal(alice.userId, "alice");
    assert.match(alice.connectionId, /.+/);
    assert.deepEqual(alice.seen.state.map((event) => event.state), ["connecting", "connected"]);
  });

  test("send() resolves with the stored message; every participant's other connections get it once", async () => {
    const alice = await connect("alice");
    const bob = await connect("bob");
    const aliceTablet = await connect("alice");
    const message = await alice.send({ recipientIds: ["bob"], content: "hello bob" });
    assert.equal(message.seq, 1);
    assert.equal(message.senderId, "alice");
    await waitFor(() => bob.seen.message.length === 1 && aliceTablet.seen.message.length === 1,
      "bob and alice's tablet to receive it");
    assert.deepEqual(bob.seen.message[0], { message, own: false, recovered: false });
    assert.deepEqual(aliceTablet.seen.message[0], { message, own: true, recovered: false });
    // the sender's own connection reports its acknowledged message as well, once
    assert.deepEqual(alice.seen.message, [{ message, own: true, recovered: false }]);
    assert.equal(alice.lastSeq(message.conversationId), 1);
    assert.equal(alice.pendingSends, 0);
  });

  test("a send with the same clientMessageId is the same message", async () => {
    const carol = await connect("carol");
    const first = await carol.send({ recipientIds: ["dave"], content: "once", clientMessageId: "cm-1" });
    const again = await carol.send({ recipientIds: ["dave"], content: "once", clientMessageId: "cm-1" });
    assert.deepEqual(again, first);
  });

  test("a send the server refuses for good rejects with its code", async () => {
    const erin = await connect("erin");
    const { conversationId } = await (await connect("frank")).send({ recipientIds: ["gina"], content: "private" });
    await assert.rejects(erin.send({ conversationId, content: "let me in" }),
      (err) => err instanceof TornchatError && err.code === "forbidden");
    await assert.rejects(erin.send({ conversationId: "c_does_not_exist", content: "x" }),
      (err) => err instanceof TornchatError && err.code === "not_found");
    await assert.rejects(erin.send({ recipientIds: ["x"], content: "   " }),
      (err) => err instanceof TornchatError && err.code === "invalid_message");
    assert.equal(erin.pendingSends, 0);
  });

  test("typing is throttled: a burst of keystrokes sends one typing frame", async () => {
    const hank = await connect("hank");
    const ivy = await connect("ivy");
    const { conversationId } = await hank.send({ recipientIds: ["ivy"], content: "hi" });
    for (let i = 0; i < 10; i++) hank.typing(conversationId);
    await waitFor(() => ivy.seen.typing.length >= 1, "ivy to see hank typing");
    await sleep(300);
    assert.deepEqual(ivy.seen.typing, [{ conversationId, userId: "hank" }]);
    assert.equal(hank.seen.typing.length, 0); // never to the typist
  });

  test("markRead is debounced: the highest seq of a burst is sent once, and everyone is told", async () => {
    const jack = await connect("jack");
    const kim = await connect("kim");
    let conversationId;
    for (let i = 1; i <= 3; i++) {
      ({ conversationId } = await jack.send({ recipientIds: ["kim"], content: `m${i}` }));
    }
    await waitFor(() => kim.seen.message.length === 3, "kim to get three messages");
    kim.markRead(conversationId, 1);
    kim.markRead(conversationId, 3);
    kim.markRead(conversationId, 2);
    await waitFor(() => jack.seen.read.length >= 1 && kim.seen.read.length >= 1, "read receipts");
    await sleep(300);
    assert.equal(jack.seen.read.length, 1);
    assert.equal(jack.seen.read[0].userId, "kim");
    assert.equal(jack.seen.read[0].lastReadSeq, 3);
    assert.equal(kim.seen.read.length, 1);
    assert.equal(kim.seen.read[0].unreadCount, 0); // the reader's own copy carries it
    const conversation = await kim.getConversation(conversationId);
    assert.equal(conversation.lastReadSeq, 3);
    assert.equal(conversation.unreadCount, 0);
  });

  test("presence: a subscribed user is reported online, then offline after the grace", async () => {
    const lena = await connect("lena");
    const max = await connect("max");
    await lena.send({ recipientIds: ["max"], content: "are you there?" });
    lena.subscribePresence(["max", "stranger"]);
    await waitFor(() => lena.seen.presence.some((p) => p.userId === "max" && p.status === "online"),
      "max online");
    await waitFor(() => lena.seen.presence.some((p) => p.userId === "stranger"), "stranger's status");
    assert.equal(lena.seen.presence.find((p) => p.userId === "stranger").status, "unknown");
    max.close();
    await waitFor(() => lena.seen.presence.some((p) => p.userId === "max" && p.status === "offline"),
      "max offline", 8000);
    assert.deepEqual((await lena.getPresence(["max"])).map((p) => p.status), ["offline"]);
  });

  test("HTTP helpers: list, open, history pages", async () => {
    const nora = await connect("nora");
    const opened = await nora.openConversation(["oscar", "pia"]);
    assert.deepEqual(opened.participants, ["nora", "oscar", "pia"]);
    assert.equal(nora.lastSeq(opened.id), 0); // tracked from its head
    for (let i = 1; i <= 5; i++) await nora.send({ conversationId: opened.id, content: `n${i}` });
    const page = await nora.getMessages(opened.id, { limit: 2, beforeSeq: 5 });
    assert.deepEqual(page.messages.map((m) => m.seq), [3, 4]);
    assert.equal(page.hasMoreBefore, true);
    const list = await nora.listConversations({ limit: 10 });
    assert.equal(list.conversations[0].id, opened.id);
    await assert.rejects(nora.getConversation("c_nope"),
      (err) => err instanceof TornchatError && err.code === "not_found" && err.status === 404);
  });
});
