// Test support: a real `tornchat serve` process on a free port (SQLite in a
// temporary directory), dev tokens from it, a TCP proxy that can cut every
// connection (a network blip), and small waiting helpers.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { once } from "node:events";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before } from "node:test";
import WebSocket from "ws";

import { TornchatClient } from "../tornchat.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoPython = path.resolve(here, "../../../.venv/bin/python");
const PYTHON = process.env.TORNCHAT_PYTHON || (existsSync(repoPython) ? repoPython : "python3");
export const API_KEY = "node-client-test-api-key-0123456789abcdef";
const SECRET = "node-client-test-secret-long-enough-for-production";

/** An HS256 JWT with these claims, signed with the test server's secret. */
export function signedToken(claims) {
  const encode = (part) => Buffer.from(JSON.stringify(part)).toString("base64url");
  const body = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(claims)}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

export async function freePort() {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function waitFor(predicate, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** A tornchat server subprocess; restart() keeps its port and database. */
export class Server {
  constructor(env = {}) {
    this.dir = mkdtempSync(path.join(tmpdir(), "tornchat-js-"));
    this.env = env;
    this.proc = null;
    this.port = null;
  }

  get httpUrl() { return `http://127.0.0.1:${this.port}`; }
  get wsUrl() { return `ws://127.0.0.1:${this.port}/api/v1/chat`; }

  async start() {
    this.port ??= await freePort();
    const log = openSync(path.join(this.dir, "server.log"), "a");
    this.proc = spawn(PYTHON, ["-m", "tornchat.cli", "serve"], {
      env: {
        ...process.env,
        PORT: String(this.port),
        TORNCHAT_HOST: "127.0.0.1",
        DATABASE_URL: `sqlite:///${path.join(this.dir, "chat.db")}`,
        ACCESS_TOKEN_SECRET: SECRET,
        TORNCHAT_API_KEY: API_KEY,
        TORNCHAT_RATE_LIMIT_PER_SECOND: "500",
        TORNCHAT_RATE_LIMIT_BURST: "500",
        LOG_LEVEL: "info",
        ...this.env,
      },
      stdio: ["ignore", log, log],
    });
    const exited = once(this.proc, "exit");
    await waitFor(async () => {
      if (this.proc.exitCode !== null) throw new Error(`server exited early:\n${this.logs()}`);
      try {
        const response = await fetch(`${this.httpUrl}/health`);
        return response.status === 200;
      } catch {
        return false;
      }
    }, "the server to answer /health", 20000);
    this.exited = exited;
    return this;
  }

  logs() {
    try { return readFileSync(path.join(this.dir, "server.log"), "utf8"); } catch { return ""; }
  }

  /** SIGTERM: the server drains (server_shutdown, close 1001) and exits. */
  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill("SIGTERM");
    await this.exited;
  }

  async restart() {
    await this.stop();
    await this.start();
  }

  async dispose() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  async token(userId, ttlSeconds = 3600) {
    const response = await fetch(`${this.httpUrl}/api/v1/dev/token`, {
      method: "POST", body: JSON.stringify({ userId, ttlSeconds }) });
    if (response.status !== 200) throw new Error(`dev token: HTTP ${response.status}`);
    return (await response.json()).token;
  }

  /** The server API: post as any user (what a backend would do). */
  async post(body) {
    const response = await fetch(`${this.httpUrl}/api/v1/server/messages`, {
      method: "POST", headers: { "X-API-Key": API_KEY }, body: JSON.stringify(body) });
    if (response.status >= 300) throw new Error(`server post: HTTP ${response.status}`);
    return (await response.json()).message;
  }

  async disconnect(userId) {
    const response = await fetch(`${this.httpUrl}/api/v1/server/users/${userId}/disconnect`, {
      method: "POST", headers: { "X-API-Key": API_KEY } });
    return (await response.json()).closed;
  }
}

/** A client of `server` for `userId`, with a recorder of everything it emits. */
export function clientFor(server, userId, options = {}) {
  const client = new TornchatClient({
    url: server.wsUrl,
    token: () => server.token(userId),
    WebSocket,
    backoffInitialMs: 100,
    backoffMaxMs: 1000,
    ...options,
  });
  const seen = { message: [], state: [], read: [], typing: [], presence: [], synced: [], error: [] };
  for (const event of Object.keys(seen)) client.on(event, (data) => seen[event].push(data));
  client.seen = seen;
  client.seqsOf = (conversationId) => seen.message
    .filter((event) => event.message.conversationId === conversationId)
    .map((event) => event.message.seq);
  return client;
}

export function range(from, to) {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

/** A TCP proxy in front of the server whose cut() drops every connection at once. */
export class Proxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.sockets = new Set();
    this.pairs = new Set();
    this.refusing = false;
    this.server = net.createServer((client) => {
      if (this.refusing) {
        client.destroy();
        return;
      }
      const upstream = net.connect(this.targetPort, "127.0.0.1");
      this.pairs.add({ client, upstream });
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on("close", () => this.sockets.delete(socket));
        socket.on("error", () => {});
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
  }

  async listen() {
    this.server.listen(0, "127.0.0.1");
    await once(this.server, "listening");
    this.port = this.server.address().port;
    return this;
  }

  get wsUrl() { return `ws://127.0.0.1:${this.port}/api/v1/chat`; }

  /** Stop forwarding what the clients send (the server's frames still arrive):
   * frames written from now on are lost with the next cut(). */
  stall() {
    for (const { client, upstream } of this.pairs) {
      client.unpipe(upstream);
      client.pause();
    }
  }

  /** Drop every connection; with `refuse`, also every new one until restore(). */
  cut({ refuse = false } = {}) {
    this.refusing = refuse;
    for (const socket of this.sockets) socket.destroy();
    this.pairs.clear();
  }

  restore() {
    this.refusing = false;
  }

  async close() {
    this.cut();
    this.server.close();
  }
}

/**
 * In a describe(): one server for the suite (started before, disposed after)
 * and a maker of recorded clients, all closed at the end.
 */
export function suiteServer(env = {}) {
  const suite = { server: null, clients: [] };
  suite.make = (userId, options) => {
    const client = clientFor(suite.server, userId, options);
    suite.clients.push(client);
    return client;
  };
  suite.connect = async (userId, options) => {
    const client = suite.make(userId, options);
    await client.connect();
    return client;
  };
  suite.adopt = (client) => {
    suite.clients.push(client);
    return client;
  };
  before(async () => {
    suite.server = await new Server(env).start();
  });
  after(async () => {
    for (const client of suite.clients) client.close();
    await suite.server.dispose();
  });
  return suite;
}
