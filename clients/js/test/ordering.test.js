// The delivery rules in isolation, with a scripted peer standing in for the
// server so that duplicates, gaps and overtaking can be produced at will:
// every message reaches "message" once, in seq order; a gap that does not
// close by itself is filled over HTTP.
import assert from "node:assert/strict";
import { once } from "node:events";
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

  beforeEach(async () => {
    peer = new WebSocketServer({ port: 0, host: "127.0.0.1" });
    await once(peer, "listening");
    frames = [];
    history = [];
    peer.on("connection", (ws) => {
      socket = ws;
      ws.on("message", (data) => {
        const frame = JSON.parse(String(data));
        frames.push(frame);
        if (frame.type === "auth") {
          ws.send(JSON.stringify({ type: "auth_success", data: { userId: "alice", connectionId: "k1" } }));
        }
      });
    });
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
