// Nothing is lost and nothing repeats when the network blips or the server
// restarts: sync on every reconnect, HTTP for what sync does not replay, and
// sends retried until acknowledged. Against a real tornchat server.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Proxy, range, suiteServer, waitFor } from "./support.js";

describe("recovery", () => {
  const suite = suiteServer({ TORNCHAT_SYNC_MAX_REPLAY: "20" });

  test("a network blip: what was sent meanwhile arrives once, in order, and queued sends go out", async () => {
    const proxy = await new Proxy(suite.server.port).listen();
    try {
      const alice = suite.make("alice");
      const bob = suite.make("bob", { url: proxy.wsUrl });
      await alice.connect();
      await bob.connect();
      const first = await alice.send({ recipientIds: ["bob"], content: "before the blip" });
      const id = first.conversationId;
      await waitFor(() => bob.lastSeq(id) === 1, "bob to get the first message");

      proxy.cut({ refuse: true });
      await waitFor(() => bob.state === "reconnecting", "bob to notice");
      const typedOffline = bob.send({ conversationId: id, content: "typed while offline" });
      for (let i = 2; i <= 6; i++) await alice.send({ conversationId: id, content: `missed ${i}` });
      assert.equal(bob.pendingSends, 1);
      proxy.restore();

      const mine = await typedOffline;
      assert.equal(mine.seq, 7);
      await waitFor(() => bob.lastSeq(id) === 7, "bob to catch up");
      assert.deepEqual(bob.seqsOf(id), range(1, 7));
      assert.deepEqual(bob.seen.message.slice(1, 6).map((e) => e.recovered), [false, false, false, false, false]);
      await waitFor(() => alice.lastSeq(id) === 7, "alice to get bob's message");
      assert.deepEqual(alice.seqsOf(id), range(1, 7));
      assert.equal(bob.seen.synced.at(-1).reconnect, true);
      const states = bob.seen.state.map((e) => e.state);
      assert.deepEqual(states.slice(0, 2), ["connecting", "connected"]);
      assert.equal(states.at(-1), "connected");
      assert.ok(states.includes("reconnecting"));
    } finally {
      await proxy.close();
    }
  });

  test("a long absence: sync replays the newest, the rest comes over HTTP, all in order", async () => {
    const carol = suite.make("carol");
    await carol.connect();
    const { conversationId: id } = await carol.send({ recipientIds: ["dave"], content: "m1" });
    for (let i = 2; i <= 60; i++) await carol.send({ conversationId: id, content: `m${i}` });

    // dave's app remembers he had seen up to seq 5 (server replays only 20)
    const dave = suite.make("dave");
    dave.track(id, 5);
    await dave.connect();
    await waitFor(() => dave.lastSeq(id) === 60, "dave to catch up to 60");
    assert.deepEqual(dave.seqsOf(id), range(6, 60));
    const synced = dave.seen.synced[0];
    assert.equal(synced.reconnect, false);
    assert.deepEqual(synced.conversations.map((c) => [c.id, c.complete, c.missingBeforeSeq]),
      [[id, false, 41]]);
    assert.ok(dave.seen.message.every((e) => e.recovered || e.message.seq > 40));
  });

  test("a server restart in the middle of a conversation", async () => {
    const erin = suite.make("erin");
    const frank = suite.make("frank");
    await erin.connect();
    await frank.connect();
    const { conversationId: id } = await erin.send({ recipientIds: ["frank"], content: "1" });
    for (let i = 2; i <= 5; i++) await erin.send({ conversationId: id, content: String(i) });
    await waitFor(() => frank.lastSeq(id) === 5, "frank to read 5");

    const stopped = suite.server.stop();
    await waitFor(() => erin.state === "reconnecting" && frank.state === "reconnecting",
      "both to see the shutdown");
    const reconnecting = frank.seen.state.find((e) => e.state === "reconnecting" && e.code === 1001);
    assert.ok(reconnecting.retryInMs >= 5000, "server_shutdown's reconnectAfterMs is honoured");
    // erin keeps typing while the server is away
    const queued = [6, 7, 8].map((n) => erin.send({ conversationId: id, content: String(n) }));
    await stopped;
    await suite.server.start();

    const acknowledged = await Promise.all(queued);
    assert.deepEqual(acknowledged.map((m) => m.seq), [6, 7, 8]);
    await erin.send({ conversationId: id, content: "9" });
    await waitFor(() => frank.lastSeq(id) === 9, "frank to catch up after the restart", 20000);
    assert.deepEqual(frank.seqsOf(id), range(1, 9));
    assert.deepEqual(frank.seen.message.map((e) => e.message.content), range(1, 9).map(String));
    assert.deepEqual(erin.seqsOf(id), range(1, 9));
  });
});
