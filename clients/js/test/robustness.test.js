// What a flaky link, a busy rate limit or a careless caller must not break:
// a conversation first seen in an own reply keeps delivering across a
// reconnect, retried sends are stored in the order they were sent, a read
// position in flight when the link drops is sent again, a closed client
// refuses sends at once, the server's own rules for lengths and ids, and a
// token provider with nothing newer stops the client. Real server.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import WebSocket from "ws";

import { TornchatClient, TornchatError } from "../tornchat.js";
import { Proxy, signedToken, sleep, suiteServer, waitFor } from "./support.js";

describe("robustness", () => {
  // the server's default frame rate limit, which the other suites raise
  const suite = suiteServer({ TORNCHAT_RATE_LIMIT_PER_SECOND: "20", TORNCHAT_RATE_LIMIT_BURST: "40" });

  test("a conversation first seen in an own reply delivers after a reconnect within the wait", async () => {
    const proxy = await new Proxy(suite.server.port).listen();
    try {
      const first = await suite.server.post({ senderId: "rb-bob", recipientIds: ["rb-alice"],
        content: "before alice connects" });
      const id = first.conversationId;
      // a long wait for overtaken messages, so the reconnect surely falls inside it
      const alice = suite.make("rb-alice", { url: proxy.wsUrl, httpUrl: suite.server.httpUrl,
        gapWaitMs: 3000 });
      await alice.connect();
      const mine = await alice.send({ conversationId: id, content: "seen first in my reply" });
      assert.equal(mine.seq, 2);
      proxy.cut();
      await waitFor(() => alice.seen.state.filter((e) => e.state === "connected").length === 2,
        "alice to reconnect");
      await suite.server.post({ senderId: "rb-bob", conversationId: id, content: "after" });
      await waitFor(() => alice.lastSeq(id) === 3, "alice to get the message after the reconnect");
      assert.deepEqual(alice.seqsOf(id), [2, 3]);
    } finally {
      await proxy.close();
    }
  });

  test("sends refused by the rate limit are retried in the order they were sent", async () => {
    // no pacing of its own: the server refuses what passes its burst
    const carol = await suite.connect("rb-carol", { sendBurst: 1000, sendPerSecond: 1000 });
    const sends = [];
    for (let i = 0; i < 60; i++) sends.push(carol.send({ recipientIds: ["rb-dave"], content: `n${i}` }));
    const stored = await Promise.all(sends);
    const seqs = stored.map((message) => message.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), "stored in the order sent");
    assert.equal(new Set(seqs).size, 60);
  });

  test("paced by default, a burst of sends stays under the server's limit", async () => {
    const erin = await suite.connect("rb-erin");
    const sends = [];
    for (let i = 0; i < 50; i++) sends.push(erin.send({ recipientIds: ["rb-fay"], content: `m${i}` }));
    const seqs = (await Promise.all(sends)).map((message) => message.seq);
    assert.deepEqual(seqs, Array.from({ length: 50 }, (_, i) => i + 1));
  });

  test("a read position in flight when the link drops is sent again after the reconnect", async () => {
    const proxy = await new Proxy(suite.server.port).listen();
    try {
      const first = await suite.server.post({ senderId: "rb-hal", recipientIds: ["rb-gus"],
        content: "read me" });
      const id = first.conversationId;
      const gus = suite.make("rb-gus", { url: proxy.wsUrl, httpUrl: suite.server.httpUrl });
      await gus.connect();
      proxy.stall(); // what gus sends from now on never reaches the server
      gus.markRead(id, 1);
      await sleep(600); // past the debounce: the frame went into the stalled link
      proxy.cut();
      await waitFor(async () => (await gus.getConversation(id)).lastReadSeq === 1,
        "the server to have gus's read position");
    } finally {
      await proxy.close();
    }
  });

  test("a closed client refuses a send at once instead of queueing it for ever", async () => {
    const ivy = await suite.connect("rb-ivy");
    ivy.close();
    await assert.rejects(ivy.send({ recipientIds: ["rb-jon"], content: "too late" }),
      (err) => err instanceof TornchatError && err.code === "closed");
  });

  test("lengths count code points and ids follow the server's printable rule", async () => {
    const kim = await suite.connect("rb-kim");
    const emoji = "\u{1F600}".repeat(2100); // 4,200 UTF-16 units, 2,100 characters
    const stored = await kim.send({ recipientIds: ["rb-lou"], content: emoji });
    assert.equal([...stored.content].length, 2100);
    await assert.rejects(kim.send({ recipientIds: ["rb-lou"], content: "x", clientMessageId: "a\u00a0b" }),
      (err) => err.code === "invalid_message");
    const ok = await kim.send({ recipientIds: ["rb-lou"], content: "y", clientMessageId: "with space" });
    assert.equal(ok.content, "y");
  });

  test("presence asked again answers a user who was unknown once a conversation exists", async () => {
    const ned = await suite.connect("rb-ned");
    await suite.connect("rb-ola");
    ned.subscribePresence(["rb-ola"]);
    await waitFor(() => ned.seen.presence.some((p) => p.userId === "rb-ola"), "a first answer");
    assert.equal(ned.seen.presence.at(-1).status, "unknown"); // nothing shared yet
    await ned.send({ recipientIds: ["rb-ola"], content: "now we share one" });
    ned.subscribePresence(["rb-ola"]);
    await waitFor(() => ned.seen.presence.some((p) => p.userId === "rb-ola" && p.status === "online"),
      "rb-ola online");
  });

  test("getPresence asks in requests the server accepts, however many ids", async () => {
    const pam = await suite.connect("rb-pam");
    const ids = Array.from({ length: 230 }, (_, i) => `rb-crowd-${i}`);
    const answers = await pam.getPresence(ids);
    assert.deepEqual(answers.map((p) => p.userId), ids);
    assert.ok(answers.every((p) => p.status === "unknown"));
  });

  test("a provider that caches its token is asked again until it has a newer one", async () => {
    let calls = 0;
    let cached = null;
    const uma = suite.make("rb-uma", {
      refreshLeadMs: 8000,
      // the same token for the connect and the first refresh, a new one after
      token: async () => {
        calls += 1;
        if (calls <= 2) cached ??= await suite.server.token("rb-uma", 20);
        return calls <= 2 ? cached : suite.server.token("rb-uma", 3600);
      },
    });
    await uma.connect();
    const connectionId = uma.connectionId;
    await waitFor(() => calls >= 3, "the provider to be asked again", 19000);
    await sleep(4000); // past the first token's exp
    assert.equal(uma.state, "connected");
    assert.equal(uma.connectionId, connectionId); // refreshed, never reconnected
  });

  test("a token provider that hands back the expired token stops the client", async () => {
    const expired = signedToken({ sub: "rb-max", exp: Math.floor(Date.now() / 1000) - 60 });
    let calls = 0;
    const max = new TornchatClient({ url: suite.server.wsUrl, WebSocket, backoffInitialMs: 50,
      token: () => { calls += 1; return expired; } });
    suite.adopt(max);
    await assert.rejects(max.connect(), (err) => err.code === "unauthorized");
    await sleep(500);
    assert.equal(max.state, "closed");
    assert.ok(calls <= 2, `asked the provider ${calls} times`);
  });
});
