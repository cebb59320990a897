// When the client stops, and when it keeps a long session alive: no reconnect
// after an invalid token (4001), a server-side disconnect (4003) or too many
// connections (4029); a token refreshed before it expires. Real server.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import WebSocket from "ws";

import { TornchatClient, TornchatError } from "../tornchat.js";
import { signedToken, sleep, suiteServer, waitFor } from "./support.js";

describe("closing and long sessions", () => {
  const suite = suiteServer({ TORNCHAT_MAX_CONNECTIONS_PER_USER: "2" });

  test("an invalid token: connect() rejects, the client stays closed", async () => {
    const client = new TornchatClient({ url: suite.server.wsUrl, token: () => "not-a-jwt", WebSocket,
      backoffInitialMs: 50 });
    suite.adopt(client);
    const states = [];
    client.on("state", (e) => states.push(e));
    await assert.rejects(client.connect(),
      (err) => err instanceof TornchatError && err.code === "unauthorized" && err.message === "Invalid token");
    await sleep(300);
    assert.deepEqual(states.map((e) => e.state), ["connecting", "closed"]);
    assert.equal(states.at(-1).code, 4001);
  });

  test("disconnected by the server API (4003): closed, no reconnect", async () => {
    const alice = suite.make("alice");
    await alice.connect();
    assert.equal(await suite.server.disconnect("alice"), 1);
    await waitFor(() => alice.state === "closed", "alice to be closed");
    await sleep(300);
    assert.deepEqual(alice.seen.state.slice(-1)[0], {
      state: "closed", previous: "connected", code: 4003, reason: "Disconnected by server" });
  });

  test("too many connections (4029): the extra one closes and does not retry", async () => {
    const tabs = [suite.make("bob"), suite.make("bob")];
    for (const tab of tabs) await tab.connect();
    const third = suite.make("bob");
    await assert.rejects(third.connect(), (err) => err.code === "closed");
    await sleep(300);
    assert.deepEqual(third.seen.state.map((e) => [e.state, e.code]),
      [["connecting", undefined], ["closed", 4029]]);
    assert.ok(tabs.every((tab) => tab.state === "connected"));
  });

  test("the token is refreshed before it expires and the session outlives it", async () => {
    let issued = 0;
    const carol = suite.make("carol", {
      token: () => { issued += 1; return suite.server.token("carol", 10); },
      refreshLeadMs: 8000,
    });
    await carol.connect();
    const connectionId = carol.connectionId;
    await waitFor(() => issued >= 2, "a refresh", 9000);
    await sleep(7000); // past the first token's exp
    assert.equal(carol.state, "connected");
    assert.equal(carol.connectionId, connectionId); // the same session, never reconnected
    assert.deepEqual(carol.seen.error, []);
    const sent = await carol.send({ recipientIds: ["dave"], content: "still here" });
    assert.equal(sent.seq, 1);
  });

  test("an expired token is replaced from the provider and the client reconnects", async () => {
    let calls = 0;
    const erin = suite.make("erin", {
      // first an already-expired token, then good ones
      token: async () => (++calls === 1
        ? signedToken({ sub: "erin", exp: Math.floor(Date.now() / 1000) - 60 })
        : suite.server.token("erin")),
    });
    await erin.connect();
    assert.equal(erin.state, "connected");
    assert.ok(calls >= 2);
    assert.ok(erin.seen.state.some((e) => e.state === "reconnecting" && e.reason === "Token expired"));
  });
});
