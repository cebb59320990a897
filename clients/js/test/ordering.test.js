// The delivery rules in isolation, with a scripted peer standing in for the
// server so that duplicates, gaps and overtaking can be produced at will:
// every message reaches "message" once, in seq order; a gap that does not
// close by itself is filled over HTTP.
import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { afterEach, beforeEach, describe, test } from "node:test";
import WebSocket, { WebSocketServer } from "ws";

import { TornchatClient } from "../tornchat.js";
import { range, sleep, waitFor } from "./support.js";

const message = (seq, conversationId = "c_1") => ({
  id: `m_${seq}`, conversationId, senderId: "bob", content: `m${seq}`,
  createdAt: "2026-01-01T00:00:00.000Z", seq });

describe("ordered, exactly-once delivery", () => {
  let peer;
  let socket;
  let frames;
  let history;
  let client;

  /** The peer records every frame and answers auth with `data`. */
  const answerAuth = (data) => {
    peer.removeAllListeners("connection");
    peer.on("connection", (ws) => {
      socket = ws;
      ws.on("message", (raw) => {
        const frame = JSON.parse(String(raw));
        frames.push(frame);
        if (frame.type === "auth") ws.send(JSON.stringify({ type: "auth_success", data }));
      });
    });
  };

  beforeEach(async () => {
    peer = new WebSocketServer({ port: 0, host: "127.0.0.1" });
    await once(peer, "listening");
    frames = [];
    history = [];
    answerAuth({ userId: "alice", connectionId: "k1" });
    // the HTTP history endpoint, answered from `history`
    const fetch = async (url) => {
      const query = new URL(url).searchParams;
      const after = Number(query.get("afterSeq") ?? 0);
      const before = Number(query.get("beforeSeq") ?? Infinity);
      const messages = history.filter((m) => m.seq > after && m.seq < before);
      return new Response(JSON.stringify({ messages, hasMoreBefore: false, hasMoreAfter: false,
        lastSeq: history.length }), { status: 200 });
    };
    client = new TornchatClient({ url: `ws://127.0.0.1:${peer.address().port}/api/v1/chat`,
      token: "t", WebSocket, fetch, gapWaitMs: 100 });
  });

  afterEach(async () => {
    client.close();
    peer.close();
  });

  const push = (...seqs) => {
    for (const seq of seqs) socket.send(JSON.stringify({ type: "new_message", data: message(seq) }));
  };

  test("duplicates are dropped", async () => {
    const seen = [];
    client.on("message", (e) => seen.push(e.message.seq));
    await client.connect();
    push(1, 2, 2, 1, 3, 3);
    await waitFor(() => seen.length === 3, "three messages");
    await sleep(50);
    assert.deepEqual(seen, [1, 2, 3]);
  });

  test("a message that overtakes another waits for it instead of being shown early", async () => {
    const seen = [];
    client.on("message", (e) => seen.push(e.message.seq));
    await client.connect();
    push(1, 3);
    await sleep(30);
    assert.deepEqual(seen, [1]);
    push(2);
    await waitFor(() => seen.length === 3, "the held message");
    assert.deepEqual(seen, [1, 2, 3]);
  });

  test("a gap that stays open is fetched over HTTP and delivered in order", async () => {
    history = range(1, 8).map((seq) => message(seq));
    const seen = [];
    client.on("message", (e) => seen.push([e.message.seq, e.recovered]));
    await client.connect();
    push(1, 2, 7, 8);
    await waitFor(() => seen.length === 8, "all eight");
    assert.deepEqual(seen.map(([seq]) => seq), range(1, 8));
    assert.deepEqual(seen.filter(([, recovered]) => recovered).map(([seq]) => seq), [3, 4, 5, 6]);
  });

  test("an own reply that overtakes others' messages in a new conversation loses none of them", async () => {
    const seen = [];
    client.on("message", (e) => seen.push(e.message.seq));
    await client.connect();
    const sent = client.send({ conversationId: "c_1", content: "mine", clientMessageId: "k-6" });
    await waitFor(() => frames.some((f) => f.type === "send_message"), "the send");
    socket.send(JSON.stringify({ type: "message_sent", clientMessageId: "k-6",
      data: { ...message(6), senderId: "alice" } }));
    push(2, 3, 4, 5);
    assert.equal((await sent).seq, 6);
    await waitFor(() => seen.length === 5, "five messages");
    assert.deepEqual(seen, [2, 3, 4, 5, 6]);
  });

  test("a failed sync is made good over HTTP", async () => {
    history = range(1, 4).map((seq) => message(seq));
    peer.removeAllListeners("connection");
    peer.on("connection", (ws) => {
      ws.on("message", (data) => {
        const frame = JSON.parse(String(data));
        if (frame.type === "auth") {
          ws.send(JSON.stringify({ type: "auth_success", data: { userId: "alice", connectionId: "k" } }));
        } else if (frame.type === "sync") {
          ws.send(JSON.stringify({ type: "error", code: "unavailable", error: "down",
            requestId: frame.requestId }));
        }
      });
    });
    const seen = [];
    client.on("message", (e) => seen.push(e.message.seq));
    client.track("c_1", 1);
    await client.connect();
    await waitFor(() => seen.length === 3, "the missed messages");
    assert.deepEqual(seen, [2, 3, 4]);
  });

  test("calls made together subscribe presence in one frame", async () => {
    await client.connect();
    client.subscribePresence(["a"]);
    client.subscribePresence(["b", "c"]);
    client.subscribePresence(["a", "d"]);
    await waitFor(() => frames.some((f) => f.type === "presence_subscribe"), "a subscription");
    await sleep(50);
    const subscriptions = frames.filter((f) => f.type === "presence_subscribe");
    assert.deepEqual(subscriptions.map((f) => f.userIds), [["a", "b", "c", "d"]]);
  });

  test("a mark_read refused as rate_limited is sent again", async () => {
    await client.connect();
    client.markRead("c_1", 3);
    await waitFor(() => frames.some((f) => f.type === "mark_read"), "mark_read");
    const first = frames.find((f) => f.type === "mark_read");
    socket.send(JSON.stringify({ type: "error", code: "rate_limited", error: "slow down",
      requestId: first.requestId }));
    await waitFor(() => frames.filter((f) => f.type === "mark_read").length === 2, "a retry", 5000);
    assert.equal(frames.filter((f) => f.type === "mark_read")[1].seq, 3);
  });

  test("a send the server could not accept or answer is refused at once", async () => {
    await client.connect();
    await assert.rejects(client.send({ conversationId: "c_1", content: "x".repeat(4001) }),
      (err) => err.code === "invalid_message");
    await assert.rejects(client.send({ conversationId: "c_1", content: "x", clientMessageId: "k".repeat(65) }),
      (err) => err.code === "invalid_message");
    await assert.rejects(client.send({ conversationId: "c_1", content: "x", clientMessageId: "a\nb" }),
      (err) => err.code === "invalid_message");
    assert.equal(frames.filter((f) => f.type === "send_message").length, 0);
  });

  test("a token that expires far in the future is not refreshed in a loop", async () => {
    answerAuth({ userId: "alice", connectionId: "k", expiresAt: "2100-01-01T00:00:00.000Z" });
    client.close();
    client = new TornchatClient({ url: `ws://127.0.0.1:${peer.address().port}/api/v1/chat`,
      token: () => "t", WebSocket });
    await client.connect();
    await sleep(300);
    assert.equal(frames.filter((f) => f.type === "refresh").length, 0);
  });

  test("after a reconnect, sync names the highest seq of each known conversation", async () => {
    client.track("c_9", 4);
    await client.connect();
    push(1);
    await waitFor(() => client.lastSeq("c_1") === 1, "c_1 tracked");
    socket.close(1011, "internal error");
    await waitFor(() => frames.filter((f) => f.type === "sync").length === 2, "a second sync", 5000);
    const syncs = frames.filter((f) => f.type === "sync");
    assert.deepEqual(syncs[0].conversations, { c_9: 4 });
    assert.deepEqual(syncs[1].conversations, { c_9: 4, c_1: 1 });
    assert.match(syncs[1].requestId, /^sync-/);
  });
});

describe("connecting", () => {
  test("a server that accepts TCP and says nothing: the client gives up the attempt, and close() is safe", async () => {
    const silent = net.createServer(() => {}); // never answers the upgrade
    silent.listen(0, "127.0.0.1");
    await once(silent, "listening");
    const client = new TornchatClient({ url: `ws://127.0.0.1:${silent.address().port}/api/v1/chat`,
      token: "t", WebSocket, connectTimeoutMs: 200, backoffInitialMs: 50 });
    const states = [];
    client.on("state", (e) => states.push(e.state));
    client.connect().catch(() => {});
    await waitFor(() => states.includes("reconnecting"), "the attempt to time out", 3000);
    client.close(); // while a new attempt may be connecting: no uncaught error
    await sleep(100);
    assert.equal(client.state, "closed");
    silent.close();
  });

  test("an authentication timeout is retried even with a fixed token", async () => {
    const peer = new WebSocketServer({ port: 0, host: "127.0.0.1" });
    await once(peer, "listening");
    let connections = 0;
    peer.on("connection", (ws) => {
      connections += 1;
      if (connections === 1) {
        ws.send(JSON.stringify({ type: "auth_error", error: "Authentication timeout" }));
        ws.close(4001, "Authentication timeout");
        return;
      }
      ws.on("message", () => ws.send(JSON.stringify({ type: "auth_success",
        data: { userId: "alice", connectionId: "k" } })));
    });
    const client = new TornchatClient({ url: `ws://127.0.0.1:${peer.address().port}/api/v1/chat`,
      token: "fixed", WebSocket, backoffInitialMs: 50 });
    await client.connect();
    assert.equal(client.state, "connected");
    assert.equal(connections, 2);
    client.close();
    peer.close();
  });
});
