// The seed's design in Node.js, as a benchmark peer for tornchat
// (loadtest/runner.py, system "node-seed-2w"). Exactly what the seed's README
// describes, written the straightforward way, speaking tornchat's wire protocol
// so the same load generator drives both:
//
// - `ws` WebSocket server; two-phase auth: {"type":"auth","token"} within 5 s,
//   an HS256 JWT verified with ACCESS_TOKEN_SECRET (`jsonwebtoken`);
// - a message is stored with an INSERT and the conversation's lastMessageAt
//   is updated with an UPDATE (`pg`, a pool per worker), then
// - PUBLISHed to `chat:{conversationId}` (`ioredis`); every worker
//   PSUBSCRIBEs `chat:*` and writes `new_message` to its own connections of
//   the participants (the sending connection excepted); the sender gets
//   `message_sent`;
// - node `cluster` workers share the port.
//
// It stores everything, like tornchat, but has no outbox, no group commit, no
// per-conversation sequence numbers and no ordering guarantees across workers.
//
// Run: node server.js --port 4900 --workers 2 --database-url postgresql://... --redis-url redis://...
import cluster from "node:cluster";
import http from "node:http";
import { randomUUID } from "node:crypto";
import process from "node:process";

import Redis from "ioredis";
import jwt from "jsonwebtoken";
import pg from "pg";
import { WebSocketServer } from "ws";

function option(name, fallback) {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? process.argv[index + 1] : fallback;
}

const PORT = Number(option("port", "4900"));
const WORKERS = Number(option("workers", "2"));
const DATABASE_URL = option("database-url", process.env.DATABASE_URL);
const REDIS_URL = option("redis-url", process.env.REDIS_URL || "redis://127.0.0.1:6379");
const SECRET = process.env.ACCESS_TOKEN_SECRET || "tornchat-development-secret-do-not-use-in-production";
const AUTH_TIMEOUT_MS = 5000;
const MAX_CONTENT = 4000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS seed_conversation (
  id text PRIMARY KEY,
  participant_key text UNIQUE NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  last_message_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS seed_participant (
  id text PRIMARY KEY,
  user_id text NOT NULL,
  conversation_id text NOT NULL REFERENCES seed_conversation(id) ON DELETE CASCADE,
  joined_at timestamptz NOT NULL DEFAULT now(),
  last_read_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (user_id, conversation_id));
CREATE INDEX IF NOT EXISTS seed_participant_user ON seed_participant(user_id);
CREATE TABLE IF NOT EXISTS seed_message (
  id text PRIMARY KEY,
  conversation_id text NOT NULL REFERENCES seed_conversation(id) ON DELETE CASCADE,
  sender_id text NOT NULL,
  content text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS seed_message_conversation ON seed_message(conversation_id, created_at);
`;

if (cluster.isPrimary) {
  const setup = new pg.Client({ connectionString: DATABASE_URL });
  await setup.connect();
  await setup.query(SCHEMA);
  await setup.end();
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  const stop = () => {
    for (const worker of Object.values(cluster.workers)) worker.kill("SIGTERM");
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  cluster.on("exit", () => {
    if (Object.keys(cluster.workers).length === 0) process.exit(0);
  });
} else {
  await worker();
}

async function worker() {
  const db = new pg.Pool({ connectionString: DATABASE_URL, max: 8 });
  const publisher = new Redis(REDIS_URL);
  const subscriber = new Redis(REDIS_URL);
  const byUser = new Map(); // userId -> Set of sockets on this worker
  const participantsOf = new Map(); // conversationId -> participant ids (a cache)
  const workerId = `${process.pid}`;

  await subscriber.psubscribe("chat:*");
  subscriber.on("pmessage", (_pattern, _channel, payload) => {
    const { message, participants, origin } = JSON.parse(payload);
    const frame = JSON.stringify({ type: "new_message", data: message });
    for (const userId of participants) {
      for (const socket of byUser.get(userId) || []) {
        if (`${workerId}:${socket.connectionId}` !== origin) socket.send(frame);
      }
    }
  });

  async function conversationFor(senderId, recipientIds) {
    const participants = [...new Set([senderId, ...recipientIds])].sort();
    const key = participants.join("\n"); // user ids hold no newline (tornchat refuses control characters)
    const id = `c_${randomUUID()}`;
    const created = await db.query(
      "INSERT INTO seed_conversation (id, participant_key) VALUES ($1, $2) " +
      "ON CONFLICT (participant_key) DO NOTHING RETURNING id", [id, key]);
    if (created.rowCount === 1) {
      for (const userId of participants) {
        await db.query("INSERT INTO seed_participant (id, user_id, conversation_id) VALUES ($1, $2, $3)",
          [randomUUID(), userId, id]);
      }
      participantsOf.set(id, participants);
      return id;
    }
    const found = await db.query("SELECT id FROM seed_conversation WHERE participant_key = $1", [key]);
    participantsOf.set(found.rows[0].id, participants);
    return found.rows[0].id;
  }

  async function participants(conversationId) {
    let ids = participantsOf.get(conversationId);
    if (!ids) {
      const rows = await db.query("SELECT user_id FROM seed_participant WHERE conversation_id = $1",
        [conversationId]);
      ids = rows.rows.map((row) => row.user_id);
      if (ids.length) participantsOf.set(conversationId, ids);
    }
    return ids;
  }

  async function sendMessage(socket, frame) {
    const reply = (body) => socket.send(JSON.stringify(body));
    const clientMessageId = frame.clientMessageId;
    const fail = (code, error) => reply({ type: "error", code, error, clientMessageId });
    if (typeof frame.content !== "string" || !frame.content.trim() || frame.content.length > MAX_CONTENT) {
      return fail("invalid_message", "content must be 1 to 4000 characters");
    }
    let conversationId = frame.conversationId;
    try {
      if (Array.isArray(frame.recipientIds) && frame.recipientIds.length) {
        conversationId = await conversationFor(socket.userId, frame.recipientIds);
      }
      const members = await participants(conversationId);
      if (!members || !members.includes(socket.userId)) return fail("forbidden", "Not a participant");
      const message = {
        id: `msg_${randomUUID()}`, conversationId, senderId: socket.userId,
        content: frame.content, createdAt: new Date().toISOString(),
      };
      await db.query("INSERT INTO seed_message (id, conversation_id, sender_id, content, created_at) " +
        "VALUES ($1, $2, $3, $4, $5)", [message.id, conversationId, message.senderId, message.content,
        message.createdAt]);
      await db.query("UPDATE seed_conversation SET last_message_at = $2, updated_at = now() WHERE id = $1",
        [conversationId, message.createdAt]);
      await publisher.publish(`chat:${conversationId}`, JSON.stringify({
        message, participants: members, origin: `${workerId}:${socket.connectionId}` }));
      reply({ type: "message_sent", data: message, clientMessageId });
    } catch (error) {
      fail("unavailable", String(error.message || error));
    }
  }

  function authenticate(socket, token) {
    try {
      const claims = jwt.verify(token, SECRET, { algorithms: ["HS256"] });
      const userId = [claims.sub, claims.userId, claims.id].find((v) => typeof v === "string" && v);
      if (!userId || claims.exp === undefined) throw new Error("Invalid token");
      socket.userId = userId;
      socket.connectionId = randomUUID();
      if (!byUser.has(userId)) byUser.set(userId, new Set());
      byUser.get(userId).add(socket);
      socket.send(JSON.stringify({ type: "auth_success",
        data: { userId, connectionId: socket.connectionId } }));
    } catch {
      socket.send(JSON.stringify({ type: "auth_error", error: "Invalid token" }));
      socket.close(4001, "Invalid token");
    }
  }

  const server = http.createServer((request, response) => {
    if (request.url === "/health") {
      response.writeHead(200, { "Content-Type": "application/json" });
      response.end(JSON.stringify({ status: "ok", pid: process.pid }));
      return;
    }
    response.writeHead(404);
    response.end();
  });
  const wss = new WebSocketServer({ server, path: "/api/v1/chat", maxPayload: 65536 });
  wss.on("connection", (socket) => {
    const timer = setTimeout(() => {
      if (!socket.userId) {
        socket.send(JSON.stringify({ type: "auth_error", error: "Authentication timeout" }));
        socket.close(4001, "Authentication timeout");
      }
    }, AUTH_TIMEOUT_MS);
    socket.on("message", (data, isBinary) => {
      let frame;
      try {
        frame = JSON.parse(isBinary ? "" : String(data));
      } catch {
        socket.send(JSON.stringify({ type: "error", code: "invalid_json", error: "Not JSON" }));
        return;
      }
      if (!socket.userId) {
        clearTimeout(timer);
        if (frame.type === "auth") authenticate(socket, frame.token);
        else {
          socket.send(JSON.stringify({ type: "auth_error", error: "Not authenticated" }));
          socket.close(4001, "Not authenticated");
        }
        return;
      }
      if (frame.type === "send_message") sendMessage(socket, frame);
      else if (frame.type === "ping") socket.send('{"type":"pong"}');
    });
    socket.on("close", () => {
      clearTimeout(timer);
      const sockets = socket.userId && byUser.get(socket.userId);
      if (sockets) {
        sockets.delete(socket);
        if (sockets.size === 0) byUser.delete(socket.userId);
      }
    });
  });
  server.listen(PORT, "127.0.0.1");
  process.on("SIGTERM", () => {
    server.close();
    for (const socket of wss.clients) socket.close(1001, "server shutting down");
    Promise.allSettled([db.end(), publisher.quit(), subscriber.quit()]).then(() => process.exit(0));
  });
}
