// tornchat.js: the browser and Node.js client of a tornchat server (wire
// contract version 2). One ES module, no runtime dependencies; the server
// serves this same file at /client/tornchat.js.
//
// What it adds to a bare WebSocket, and why:
// - it stays connected: reconnects with full-jitter exponential backoff, waits
//   what server_shutdown asks, and stops where retrying cannot help (an
//   invalid token 4001, a server-side disconnect 4003, too many connections
//   4029, a protocol error 1002/1007/1009);
// - it loses nothing and repeats nothing: per conversation it keeps the
//   highest seq delivered, drops duplicates, holds messages that arrive after
//   a gap, and fills the gap (sync on every reconnect, HTTP history for what
//   sync declares missing or a live gap that does not close by itself); every
//   message reaches the "message" event once, in seq order;
// - nothing typed is lost: send() queues the message with a clientMessageId
//   and resends it after every reconnect until message_sent acknowledges it
//   (the server treats a repeated clientMessageId as the same message);
// - long sessions: the token is refreshed before it expires.
//
// Types: tornchat.d.ts beside this file.

const DEFAULTS = Object.freeze({
  backoffInitialMs: 500,
  backoffMaxMs: 30000,
  refreshLeadMs: 60000,
  typingThrottleMs: 2000,
  markReadDebounceMs: 300,
  gapWaitMs: 400,
  syncBatch: 200,
  pingIntervalMs: 25000,
  pongTimeoutMs: 10000,
  connectTimeoutMs: 15000,
  maxMessageLength: 4000,
  stableAfterMs: 10000,
  // sends go out at most this fast, in order, so a queue flushed after a
  // reconnect stays under the server's frame rate limit (20/s, burst 40 by
  // default, shared with typing, read and ping frames)
  sendBurst: 30,
  sendPerSecond: 15,
  httpTimeoutMs: 15000,
});

const MAX_TIMER_MS = 2 ** 31 - 1; // setTimeout fires at once past this
const MAX_CLIENT_MESSAGE_ID = 64;

const PRESENCE_PER_FRAME = 100; // the server's bound per presence_subscribe
const HISTORY_PAGE = 200; // the server's largest history page

// a 4001 after which only a new token can help (needs a provider); an auth
// timeout is retried whatever the token; any other 4001 is final
const TOKEN_EXPIRED = "Token expired";
const AUTH_TIMEOUT = "Authentication timeout";
// close codes after which reconnecting cannot help (PROTOCOL close-code table)
const FINAL_CLOSE = new Set([1002, 1003, 1007, 1008, 1009, 4003, 4029]);
// error codes that end a send for good; anything else is retried
const FINAL_SEND_ERRORS = new Set(["invalid_message", "invalid_json", "forbidden", "not_found"]);
// error codes after which a request (sync, mark_read, presence) is worth repeating
const RETRY_REQUEST_ERRORS = new Set(["rate_limited", "unavailable", "internal_error"]);

/** An error the server answered: a rejected send or a failed HTTP call. */
export class TornchatError extends Error {
  constructor(code, message, status) {
    super(message);
    this.name = "TornchatError";
    this.code = code;
    if (status !== undefined) this.status = status;
  }
}

/** Length in code points, as the server counts it (not UTF-16 units). */
function codePoints(text) {
  let n = 0;
  for (const _ of text) n += 1; // eslint-disable-line no-unused-vars
  return n;
}

// what Python's str.isprintable() refuses: the Unicode categories "Other"
// (Cc, Cf, Cs, Co, Cn) and "Separator" (Zl, Zp, Zs) except the ASCII space
const NOT_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]|(?! )\p{Zs}/u;

/** True when a JWT's ``exp`` has passed by this clock; false when it has
 * not, or cannot be read (the server then decides). */
function tokenExpired(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const { exp } = JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "=")));
    return typeof exp === "number" && exp * 1000 <= Date.now();
  } catch {
    return false;
  }
}

function randomId() {
  const cryptoApi = globalThis.crypto;
  if (cryptoApi && typeof cryptoApi.randomUUID === "function") return cryptoApi.randomUUID();
  const bytes = new Uint8Array(16);
  if (cryptoApi && typeof cryptoApi.getRandomValues === "function") {
    cryptoApi.getRandomValues(bytes); // also outside secure contexts, unlike randomUUID
  } else {
    for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  }
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function defaultUrl() {
  const location = globalThis.location;
  if (!location || !location.host) {
    throw new TypeError("tornchat: pass options.url (ws://host:port/api/v1/chat) outside a browser");
  }
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/chat`;
}

function httpBase(wsUrl) {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  return url.origin;
}

/** Per-conversation delivery state: what was delivered, what waits behind a gap. */
class Track {
  constructor(last) {
    this.last = last; // highest seq delivered, all below it delivered too
    this.held = new Map(); // seq -> {message, recovered}, all > last + 1
    this.gapTimer = null;
    this.filling = false;
    this.fillFailures = 0;
    this.starting = false;
  }

  lowestHeld() {
    let low = Infinity;
    for (const seq of this.held.keys()) if (seq < low) low = seq;
    return low;
  }
}

export class TornchatClient {
  constructor(options) {
    if (!options || (typeof options.token !== "string" && typeof options.token !== "function")) {
      throw new TypeError("tornchat: options.token must be a JWT string or a function returning one");
    }
    this._options = { ...DEFAULTS, ...options };
    this._url = options.url || defaultUrl();
    this._httpUrl = (options.httpUrl || httpBase(this._url)).replace(/\/+$/, "");
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    this._fetch = options.fetch || globalThis.fetch?.bind(globalThis);
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("tornchat: no WebSocket; pass options.WebSocket (e.g. the ws package)");
    }
    this._listeners = new Map();
    this._state = "idle";
    this._ws = null;
    this._token = typeof options.token === "string" ? options.token : null;
    this._userId = null;
    this._connectionId = null;
    this._everConnected = false;
    this._stopped = true;
    this._final = false; // stopped by close() or a final close: sends are refused until connect()
    this._expiredToken = null; // the token a 4001 "Token expired" refused
    this._acceptedToken = null; // the token the server last accepted (auth or refresh)
    this._authToken = null; // the token of the auth frame in flight
    this._refreshesOut = new Map(); // requestId of a refresh -> its token
    this._expiresAt = null; // the session's expiry as the server last said it
    this._sendTokens = this._options.sendBurst;
    this._sendRefilledAt = Date.now();
    this._sendPause = null; // timer: the outbox waits after a rate_limited or unavailable send
    this._sendPauses = 0; // consecutive pauses, for their backoff
    this._flushTimer = null;
    this._attempts = 0;
    this._requests = 0;
    this._timers = new Set();
    this._reconnectTimer = null;
    this._connectTimer = null;
    this._attempt = 0; // which _open() is current; older ones give up
    this._connectedAt = 0;
    this._refreshTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._tracks = new Map(); // conversationId -> Track
    this._outbox = new Map(); // clientMessageId -> pending send, in send order
    this._readsDue = new Map(); // conversationId -> {seq, timer}
    this._typingSent = new Map(); // conversationId -> time of the last typing frame
    this._presence = new Set();
    this._syncing = new Map(); // requestId of a sync frame not yet answered -> its conversations
    this._requestsOut = new Map(); // requestId -> frame, for mark_read and presence_subscribe
    this._presenceDue = null; // user ids to subscribe in the next microtask
    this._syncResult = null;
    this._closeInfo = null; // what the server said before closing: auth_error, server_shutdown
    this._connectWaiters = [];
  }

  // -- public state ----------------------------------------------------------

  get state() { return this._state; }
  get userId() { return this._userId; }
  get connectionId() { return this._connectionId; }
  get pendingSends() { return this._outbox.size; }

  lastSeq(conversationId) {
    return this._tracks.get(conversationId)?.last;
  }

  track(conversationId, seq) {
    if (!Number.isInteger(seq) || seq < 0) throw new TypeError("tornchat: seq must be an integer >= 0");
    const track = this._tracks.get(conversationId);
    if (!track) {
      this._tracks.set(conversationId, new Track(seq));
    } else if (seq > track.last) {
      track.last = seq; // the caller shows these already
      for (const held of [...track.held.keys()]) if (held <= seq) track.held.delete(held);
      this._release(conversationId, track);
    }
  }

  // -- events ----------------------------------------------------------------

  on(event, listener) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    this._listeners.get(event)?.delete(listener);
  }

  _emit(event, data) {
    for (const listener of [...(this._listeners.get(event) || [])]) {
      try {
        listener(data);
      } catch (err) {
        // a listener's bug must not break delivery to the others or the client itself
        setTimeout(() => { throw err; }, 0);
      }
    }
  }

  _setState(state, details = {}) {
    if (state === this._state) return;
    const previous = this._state;
    this._state = state;
    this._emit("state", { state, previous, ...details });
  }

  // -- timers (all cleared by close(), so a closed client keeps no process alive)

  _later(ms, fn) {
    const timer = setTimeout(() => {
      this._timers.delete(timer);
      fn();
    }, ms);
    this._timers.add(timer);
    return timer;
  }

  _cancel(timer) {
    if (timer) {
      clearTimeout(timer);
      this._timers.delete(timer);
    }
    return null;
  }

  // -- connection lifecycle --------------------------------------------------

  connect() {
    const ready = new Promise((resolve, reject) => this._connectWaiters.push({ resolve, reject }));
    if (this._stopped) {
      this._stopped = false;
      this._final = false;
      this._attempts = 0;
      this._open();
    } else if (this._state === "connected") {
      this._settleConnect(null);
    }
    return ready;
  }

  close() {
    this._stopped = true;
    this._final = true;
    for (const timer of this._timers) clearTimeout(timer);
    this._timers.clear();
    this._reconnectTimer = this._refreshTimer = this._pingTimer = this._pongTimer = null;
    this._connectTimer = this._sendPause = this._flushTimer = null;
    this._attempt += 1;
    for (const track of this._tracks.values()) {
      track.gapTimer = null;
      this._endStart(track); // its timer is gone: decide now where it starts
    }
    for (const due of this._readsDue.values()) due.timer = null;
    const ws = this._ws;
    this._detach();
    if (ws) {
      try { ws.close(1000, "client closed"); } catch { /* already closing */ }
    }
    for (const pending of this._outbox.values()) {
      pending.reject(new TornchatError("closed", "The client was closed before the message was acknowledged"));
    }
    this._outbox.clear();
    this._settleConnect(new TornchatError("closed", "The client was closed"));
    this._setState("closed", { code: 1000, reason: "client closed" });
  }

  _settleConnect(error) {
    const waiters = this._connectWaiters;
    this._connectWaiters = [];
    for (const waiter of waiters) (error ? waiter.reject(error) : waiter.resolve());
  }

  async _open() {
    this._reconnectTimer = null;
    this._closeInfo = null;
    const attempt = ++this._attempt;
    this._setState(this._everConnected ? "reconnecting" : "connecting");
    let token;
    try {
      token = await this._freshToken();
    } catch (err) {
      if (this._stopped || attempt !== this._attempt) return;
      this._emit("error", { code: "token_provider", error: String(err?.message || err) });
      this._scheduleReconnect(undefined, "token provider failed");
      return;
    }
    if (this._stopped || attempt !== this._attempt) return; // closed, or superseded
    if (token === this._expiredToken && tokenExpired(token)) {
      // the provider has nothing newer: retrying would be refused the same way, for ever
      this._stopForGood(4001, "Token expired, and the token provider returned it again");
      return;
    }
    let ws;
    try {
      ws = new this._WebSocket(this._url);
    } catch (err) {
      this._emit("error", { code: "connect", error: String(err?.message || err) });
      this._scheduleReconnect(undefined, "could not connect");
      return;
    }
    this._ws = ws;
    this._authToken = token;
    ws.onopen = () => { if (this._ws === ws) this._frame({ type: "auth", token }); };
    ws.onmessage = (event) => { if (this._ws === ws) this._receive(event.data); };
    ws.onerror = () => {}; // the close event that follows says what happened
    ws.onclose = (event) => {
      if (this._ws === ws) this._closed(event.code, event.reason || "");
    };
    // a link that accepts TCP and then says nothing must not hang the client
    this._connectTimer = this._later(this._options.connectTimeoutMs, () => {
      this._connectTimer = null;
      if (this._ws !== ws || this._connectionId) return;
      this._closed(1006, "connect timeout");
      try { ws.close(); } catch { /* never opened */ }
    });
  }

  /** Forget the socket without waiting for its close handshake. */
  _detach() {
    const ws = this._ws;
    this._ws = null;
    this._connectionId = null;
    this._connectTimer = this._cancel(this._connectTimer);
    this._refreshTimer = this._cancel(this._refreshTimer);
    this._pingTimer = this._cancel(this._pingTimer);
    this._pongTimer = this._cancel(this._pongTimer);
    this._syncing.clear();
    for (const request of this._requestsOut.values()) {
      if (request.type !== "mark_read") continue; // presence is re-subscribed whole
      // unanswered: it may never have arrived; sent again after the reconnect
      const due = this._readsDue.get(request.conversationId);
      if (due) due.seq = Math.max(due.seq, request.seq);
      else this._readsDue.set(request.conversationId, { seq: request.seq, timer: null });
    }
    this._requestsOut.clear();
    this._refreshesOut.clear();
    this._sendPause = this._cancel(this._sendPause);
    this._flushTimer = this._cancel(this._flushTimer);
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => {}; // ws emits an error when closed while connecting
    }
    for (const pending of this._outbox.values()) pending.inFlight = false;
  }

  _closed(code, closeReason) {
    const info = this._closeInfo || {};
    const wasUp = this._connectionId !== null;
    this._detach();
    if (this._stopped) return;
    if (wasUp && Date.now() - this._connectedAt >= this._options.stableAfterMs) {
      this._attempts = 0; // it held: start the backoff over (a crash loop keeps growing it)
    }
    const reason = info.authError || closeReason;
    let final = FINAL_CLOSE.has(code);
    if (code === 4001) {
      // an expired token needs a provider to get a new one; a timeout is worth
      // another try; an invalid token is final
      final = reason === TOKEN_EXPIRED ? typeof this._options.token !== "function"
        : reason !== AUTH_TIMEOUT;
    }
    if (final) {
      this._stopForGood(code, reason);
      return;
    }
    if (code === 4001 && reason === TOKEN_EXPIRED) {
      // refused at auth: the token just sent; later: the one the session ran on
      this._expiredToken = wasUp ? this._acceptedToken : this._authToken;
    }
    let delay;
    if (info.reconnectAfterMs !== undefined) { // a shutdown, whatever code the close got
      const after = info.reconnectAfterMs;
      delay = after + Math.random() * after * 0.5; // spread the whole fleet's return
    }
    this._scheduleReconnect(delay, reason, code);
  }

  /** A close after which reconnecting cannot help: every pending send fails. */
  _stopForGood(code, reason) {
    this._stopped = true;
    this._final = true;
    const error = new TornchatError(code === 4001 ? "unauthorized" : "closed",
      reason || `closed with ${code}`);
    for (const pending of this._outbox.values()) pending.reject(error);
    this._outbox.clear();
    this._settleConnect(error);
    this._setState("closed", { code, reason });
  }

  _scheduleReconnect(delay, reason, code) {
    if (this._stopped) return;
    if (delay === undefined) {
      const cap = Math.min(this._options.backoffMaxMs,
        this._options.backoffInitialMs * 2 ** Math.min(this._attempts, 30));
      delay = Math.random() * cap; // full jitter
    }
    this._attempts += 1;
    this._reconnectTimer = this._cancel(this._reconnectTimer);
    this._reconnectTimer = this._later(delay, () => this._open());
    const previous = this._state; // every attempt is announced, also while reconnecting
    this._state = "reconnecting";
    this._emit("state", { state: "reconnecting", previous, code, reason, retryInMs: Math.round(delay) });
  }

  async _freshToken() {
    const provider = this._options.token;
    this._token = typeof provider === "function" ? await provider() : provider;
    if (typeof this._token !== "string" || !this._token) {
      throw new TypeError("the token provider returned no token");
    }
    return this._token;
  }

  // -- frames ----------------------------------------------------------------

  _frame(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  _requestId(kind) {
    this._requests += 1;
    return `${kind}-${this._requests}`;
  }

  _receive(raw) {
    let frame;
    try {
      frame = JSON.parse(typeof raw === "string" ? raw : String(raw));
    } catch {
      return; // the server only sends JSON text; anything else is not ours to act on
    }
    this._pongTimer = this._cancel(this._pongTimer); // anything received proves the link
    switch (frame.type) {
      case "auth_success": return this._authenticated(frame.data);
      case "auth_error": this._closeInfo = { ...this._closeInfo, authError: frame.error }; return;
      case "server_shutdown":
        this._closeInfo = { ...this._closeInfo, reconnectAfterMs: frame.data?.reconnectAfterMs };
        return;
      case "message_sent": return this._acknowledged(frame);
      case "new_message": return this._message(frame.data, false);
      case "sync_done": return this._syncDone(frame);
      case "read":
        if (frame.requestId) this._requestsOut.delete(frame.requestId);
        return this._emit("read", frame.data);
      case "typing": return this._emit("typing", frame.data);
      case "presence":
        if (frame.requestId) this._requestsOut.delete(frame.requestId);
        return this._emit("presence", frame.data);
      case "refresh_success":
        if (this._refreshesOut.has(frame.requestId)) {
          this._acceptedToken = this._refreshesOut.get(frame.requestId);
          this._refreshesOut.delete(frame.requestId);
        }
        return this._scheduleRefresh(frame.data?.expiresAt);
      case "error": return this._serverError(frame);
      default: return undefined; // pong, and frame types newer than this client
    }
  }

  _authenticated(data) {
    const ws = this._ws;
    const reconnect = this._everConnected;
    this._everConnected = true;
    this._connectedAt = Date.now();
    this._connectTimer = this._cancel(this._connectTimer);
    this._userId = data.userId;
    this._connectionId = data.connectionId;
    this._acceptedToken = this._authToken;
    this._setState("connected");
    this._settleConnect(null);
    if (this._stopped || this._ws !== ws) return; // a listener closed the client
    this._sync(reconnect); // first, so the server's sync hold holds live messages for it
    this._scheduleRefresh(data.expiresAt);
    this._schedulePing();
    this._subscribe([...this._presence]);
    for (const [conversationId, due] of this._readsDue) {
      if (!due.timer) this._sendRead(conversationId);
    }
    this._sendPauses = 0;
    this._flushOutbox();
  }

  // -- liveness: browsers cannot send protocol pings, so the client asks the
  // server for a pong and gives up on a link that stays silent

  _schedulePing() {
    this._pingTimer = this._cancel(this._pingTimer);
    this._pingTimer = this._later(this._options.pingIntervalMs, () => {
      if (!this._frame({ type: "ping" })) return;
      this._cancel(this._pongTimer);
      this._pongTimer = this._later(this._options.pongTimeoutMs, () => {
        const ws = this._ws;
        this._closed(1006, "no answer to ping");
        try { ws?.close(); } catch { /* dead anyway */ }
      });
      this._schedulePing();
    });
  }

  // -- token refresh -----------------------------------------------------------

  _scheduleRefresh(expiresAt) {
    this._refreshTimer = this._cancel(this._refreshTimer);
    this._expiresAt = expiresAt;
    if (!expiresAt || typeof this._options.token !== "function") return;
    const left = Date.parse(expiresAt) - Date.now();
    if (!Number.isFinite(left)) return;
    // at 80% of what is left (a refresh queued behind a slow frame is read
    // late, and the clocks may differ), at least refreshLeadMs before exp,
    // never in the first half
    const lead = Math.min(Math.max(this._options.refreshLeadMs, left * 0.2), left / 2);
    const delay = Math.max(1000, left - lead);
    // a far expiry: wake up at the longest a timer can wait and look again
    this._refreshTimer = this._later(Math.min(delay, MAX_TIMER_MS), () => {
      if (delay > MAX_TIMER_MS) this._scheduleRefresh(expiresAt);
      else this._refresh();
    });
  }

  async _refresh() {
    this._refreshTimer = null;
    const attempt = this._attempt;
    let token;
    try {
      token = await this._freshToken();
    } catch (err) {
      if (this._stopped) return;
      this._emit("error", { code: "token_provider", error: String(err?.message || err) });
      this._refreshTimer = this._later(5000, () => this._refresh());
      return;
    }
    if (this._stopped || attempt !== this._attempt || !this._connectionId) return; // stale
    // the token the server already has cannot move the expiry
    if (token === this._acceptedToken) {
      // a provider that caches its token until later: ask again, a quarter of
      // the time left from now (at least 5 s), until it has a newer one
      const left = Date.parse(this._expiresAt) - Date.now();
      if (Number.isFinite(left) && left > 5000) {
        this._refreshTimer = this._later(Math.max(5000, left / 4), () => this._refresh());
      }
      return;
    }
    const requestId = this._requestId("refresh");
    if (this._frame({ type: "refresh", token, requestId })) this._refreshesOut.set(requestId, token);
  }

  // -- sending -----------------------------------------------------------------

  send(options) {
    const { conversationId, recipientIds, content } = options || {};
    if ((conversationId === undefined) === (recipientIds === undefined)) {
      return Promise.reject(new TornchatError("invalid_message",
        "Give exactly one of conversationId and recipientIds"));
    }
    if (typeof content !== "string" || !content.trim()) {
      return Promise.reject(new TornchatError("invalid_message", "content must be a non-blank string"));
    }
    if (this._final) {
      return Promise.reject(new TornchatError("closed", "The client is closed; call connect() first"));
    }
    if (codePoints(content) > this._options.maxMessageLength) {
      // the server would refuse it, or close the socket for a frame that large
      return Promise.reject(new TornchatError("invalid_message",
        `content is longer than ${this._options.maxMessageLength} characters`));
    }
    const given = options.clientMessageId;
    if (given !== undefined && (typeof given !== "string" || given.length === 0
        || codePoints(given) > MAX_CLIENT_MESSAGE_ID || NOT_PRINTABLE.test(given))) {
      // the server could not echo it on an error, and the send would never settle
      return Promise.reject(new TornchatError("invalid_message",
        `clientMessageId must be 1 to ${MAX_CLIENT_MESSAGE_ID} printable characters`));
    }
    const clientMessageId = given || randomId();
    const existing = this._outbox.get(clientMessageId);
    if (existing) return existing.promise;
    const frame = { type: "send_message", content, clientMessageId };
    if (conversationId !== undefined) frame.conversationId = conversationId;
    else frame.recipientIds = [...recipientIds];
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    // a message ends the typing the others see: the next keystroke may say so at once
    if (conversationId !== undefined) this._typingSent.delete(conversationId);
    const pending = { frame, promise, resolve, reject, inFlight: false };
    this._outbox.set(clientMessageId, pending);
    if (this._state === "connected") this._flushOutbox();
    return promise;
  }

  /**
   * Send what waits, oldest first, at most ``sendBurst`` at once and
   * ``sendPerSecond`` after that: a later send never goes out before an
   * earlier one, and a queue flushed after a reconnect is not refused by the
   * server's rate limit. Nothing goes out while a pause after a refused send
   * runs.
   */
  _flushOutbox() {
    if (this._sendPause || this._state !== "connected") return;
    const { sendBurst, sendPerSecond } = this._options;
    const now = Date.now();
    this._sendTokens = Math.min(sendBurst,
      this._sendTokens + (now - this._sendRefilledAt) / 1000 * sendPerSecond);
    this._sendRefilledAt = now;
    for (const pending of this._outbox.values()) {
      if (pending.inFlight) continue;
      if (this._sendTokens < 1) {
        if (!this._flushTimer) {
          this._flushTimer = this._later((1 - this._sendTokens) / sendPerSecond * 1000, () => {
            this._flushTimer = null;
            this._flushOutbox();
          });
        }
        return;
      }
      if (!this._frame(pending.frame)) return; // the socket went: the reconnect flushes
      pending.inFlight = true;
      this._sendTokens -= 1;
    }
  }

  _acknowledged(frame) {
    const pending = this._outbox.get(frame.clientMessageId);
    if (pending) {
      this._outbox.delete(frame.clientMessageId);
      this._sendPauses = 0; // the pauses' backoff counts refusals in a row
    }
    const message = frame.data;
    if (message && typeof message.seq === "number" && message.seq > 1
        && !this._tracks.has(message.conversationId)) {
      // the reply can overtake others' messages on the fan-out path: wait for
      // them before deciding where this conversation starts for us
      const track = new Track(message.seq - 1);
      track.starting = true;
      this._tracks.set(message.conversationId, track);
      track.gapTimer = this._later(this._options.gapWaitMs, () => {
        track.gapTimer = null;
        this._endStart(track);
        this._release(message.conversationId, track);
      });
    }
    this._message(message, false);
    pending?.resolve(message);
  }

  _serverError(frame) {
    const pending = frame.clientMessageId !== undefined && this._outbox.get(frame.clientMessageId);
    if (pending) return this._sendFailed(frame.clientMessageId, pending, frame);
    const requestId = frame.requestId || "";
    if (requestId.startsWith("sync-")) {
      this._emit("error", frame);
      const ids = this._syncing.get(requestId) || [];
      this._syncAnswered(requestId);
      for (const id of ids) { // what that sync would have replayed comes over HTTP
        const track = this._tracks.get(id);
        if (track) this._fill(id, track, Infinity);
      }
      return undefined;
    }
    const request = this._requestsOut.get(requestId);
    if (request) {
      this._requestsOut.delete(requestId);
      if (RETRY_REQUEST_ERRORS.has(frame.code)) {
        this._later(1000 + Math.random() * 1000, () => {
          // a read is kept due (sent after a reconnect too); presence is re-sent on reconnect
          if (request.type === "mark_read") this.markRead(request.conversationId, request.seq);
          else if (this._state !== "connected") return;
          else this._subscribe(request.userIds.filter((id) => this._presence.has(id)));
        });
        return undefined;
      }
    }
    if (requestId.startsWith("refresh-")) {
      this._refreshesOut.delete(requestId);
      // the old expiry stands; try again while there is time
      this._emit("error", frame);
      this._refreshTimer = this._cancel(this._refreshTimer);
      this._refreshTimer = this._later(10000, () => this._refresh());
      return undefined;
    }
    this._emit("error", frame);
    return undefined;
  }

  _sendFailed(clientMessageId, pending, frame) {
    pending.inFlight = false;
    if (FINAL_SEND_ERRORS.has(frame.code)) {
      this._outbox.delete(clientMessageId);
      pending.reject(new TornchatError(frame.code, frame.error));
      return;
    }
    // rate_limited, unavailable: nothing was stored. The whole queue pauses
    // and then goes out again oldest first, so the retry keeps the order in
    // which the messages were sent (a timer per send would shuffle them)
    if (this._sendPause) return;
    this._sendPauses += 1;
    const cap = Math.min(this._options.backoffMaxMs, 1000 * 2 ** Math.min(this._sendPauses - 1, 5));
    this._sendPause = this._later(cap / 2 + Math.random() * cap / 2, () => {
      this._sendPause = null;
      this._flushOutbox();
    });
  }

  // -- typing, read state, presence ------------------------------------------

  typing(conversationId) {
    const now = Date.now();
    if (now - (this._typingSent.get(conversationId) || 0) < this._options.typingThrottleMs) return;
    if (this._frame({ type: "typing", conversationId })) this._typingSent.set(conversationId, now);
  }

  markRead(conversationId, seq) {
    if (!Number.isInteger(seq) || seq < 0) throw new TypeError("tornchat: seq must be an integer >= 0");
    const due = this._readsDue.get(conversationId) || { seq: 0, timer: null };
    due.seq = Math.max(due.seq, seq);
    this._cancel(due.timer);
    due.timer = this._later(this._options.markReadDebounceMs, () => {
      due.timer = null;
      if (this._state === "connected") this._sendRead(conversationId);
    });
    this._readsDue.set(conversationId, due);
  }

  _sendRead(conversationId) {
    const due = this._readsDue.get(conversationId);
    if (!due) return;
    const frame = { type: "mark_read", conversationId, seq: due.seq, requestId: this._requestId("read") };
    if (this._frame(frame)) {
      this._readsDue.delete(conversationId);
      this._requestsOut.set(frame.requestId, frame);
    }
  }

  subscribePresence(userIds) {
    // every id given is asked again, also one already subscribed: a user who
    // was "unknown" (no shared conversation yet) is answered anew once one exists
    const asked = [...new Set(userIds)];
    for (const id of asked) this._presence.add(id);
    if (this._state !== "connected" || asked.length === 0) return;
    // calls made together go out together, 100 users a frame
    if (this._presenceDue === null) {
      this._presenceDue = [];
      queueMicrotask(() => {
        const due = [...new Set(this._presenceDue)].filter((id) => this._presence.has(id));
        this._presenceDue = null;
        if (this._state === "connected") this._subscribe(due);
      });
    }
    this._presenceDue.push(...asked);
  }

  unsubscribePresence(userIds) {
    const removed = userIds.filter((id) => this._presence.delete(id));
    for (let i = 0; i < removed.length; i += PRESENCE_PER_FRAME) {
      this._frame({ type: "presence_unsubscribe", userIds: removed.slice(i, i + PRESENCE_PER_FRAME) });
    }
  }

  _subscribe(userIds) {
    for (let i = 0; i < userIds.length; i += PRESENCE_PER_FRAME) {
      const frame = { type: "presence_subscribe", userIds: userIds.slice(i, i + PRESENCE_PER_FRAME),
        requestId: this._requestId("presence") };
      if (this._frame(frame)) this._requestsOut.set(frame.requestId, frame);
    }
  }

  // -- ordered, exactly-once delivery ------------------------------------------

  _message(message, recovered) {
    if (!message || typeof message.seq !== "number") return;
    const id = message.conversationId;
    let track = this._tracks.get(id);
    if (!track) {
      track = new Track(message.seq - 1); // a conversation new to us starts where we join it
      this._tracks.set(id, track);
    }
    if (track.starting) { // where it starts is not decided yet: keep everything
      if (!track.held.has(message.seq)) track.held.set(message.seq, { message, recovered });
      return;
    }
    if (message.seq <= track.last || track.held.has(message.seq)) return; // a duplicate
    track.held.set(message.seq, { message, recovered });
    this._release(id, track);
  }

  /** A conversation first seen in an own send's reply starts below what is
   * held of it (its earlier messages may have been overtaken by the reply). */
  _endStart(track) {
    if (!track.starting) return;
    track.starting = false;
    track.last = Math.min(track.last, track.lowestHeld() - 1);
  }

  /** Deliver what is contiguous; schedule a fill if something waits behind a gap. */
  _release(id, track) {
    if (track.starting) return;
    for (let next = track.held.get(track.last + 1); next; next = track.held.get(track.last + 1)) {
      track.held.delete(track.last + 1);
      track.last += 1;
      const { message, recovered } = next;
      this._emit("message", { message, own: message.senderId === this._userId, recovered });
    }
    if (track.held.size === 0) {
      track.gapTimer = this._cancel(track.gapTimer);
      track.fillFailures = 0;
    } else if (!track.gapTimer && !track.filling && this._syncing.size === 0) {
      // messages can overtake each other between the reply and fan-out paths;
      // give the missing ones a moment to arrive live before fetching them
      track.gapTimer = this._later(this._options.gapWaitMs, () => {
        track.gapTimer = null;
        this._fill(id, track, track.lowestHeld() - 1);
      });
    }
  }

  /** Fetch (track.last, upTo] over HTTP and deliver it. */
  async _fill(id, track, upTo) {
    if (track.filling || upTo <= track.last || this._stopped) return;
    track.filling = true;
    try {
      while (track.last < upTo) {
        const bounds = { afterSeq: track.last, limit: HISTORY_PAGE };
        if (Number.isFinite(upTo)) bounds.beforeSeq = upTo + 1;
        const page = await this.getMessages(id, bounds);
        if (this._stopped) return;
        if (page.messages.length === 0) {
          if (!Number.isFinite(upTo)) break; // caught up with the head
          throw new TornchatError("unavailable", "history did not return the missing messages");
        }
        for (const message of page.messages) {
          if (message.seq > track.last && !track.held.has(message.seq)) {
            track.held.set(message.seq, { message, recovered: true });
          }
        }
        const before = track.last;
        track.filling = false;
        this._release(id, track);
        track.filling = true;
        if (track.last === before) break;
        if (!Number.isFinite(upTo) && !page.hasMoreAfter) break;
      }
      track.fillFailures = 0;
    } catch (err) {
      if (this._stopped) return;
      track.fillFailures += 1;
      this._emit("error", { code: err?.code || "gap_fill", error: String(err?.message || err) });
      if (err?.code === "forbidden" || err?.code === "not_found") {
        this._tracks.delete(id);
        return;
      }
    } finally {
      track.filling = false;
    }
    if (track.held.size > 0 && !this._stopped && this._tracks.get(id) === track) {
      const wait = Math.min(30000, 500 * 2 ** Math.min(track.fillFailures, 6));
      track.gapTimer = this._cancel(track.gapTimer);
      track.gapTimer = this._later(wait, () => {
        track.gapTimer = null;
        this._fill(id, track, track.lowestHeld() - 1);
      });
    }
  }

  _sync(reconnect) {
    const known = [...this._tracks.entries()];
    this._syncResult = { conversations: [], errors: [], reconnect };
    if (known.length === 0) {
      this._emit("synced", this._syncResult);
      return;
    }
    for (let i = 0; i < known.length; i += this._options.syncBatch) {
      const conversations = {};
      for (const [id, track] of known.slice(i, i + this._options.syncBatch)) {
        this._endStart(track); // the sync cancels its timer: decide where it starts now
        conversations[id] = track.last;
        track.gapTimer = this._cancel(track.gapTimer); // sync answers the gap
      }
      const requestId = this._requestId("sync");
      if (this._frame({ type: "sync", conversations, requestId })) {
        this._syncing.set(requestId, Object.keys(conversations));
      }
    }
    if (this._syncing.size === 0) this._emit("synced", this._syncResult);
  }

  _syncDone(frame) {
    const result = this._syncResult;
    if (!this._syncing.has(frame.requestId) || !result) return;
    for (const entry of frame.data?.conversations || []) result.conversations.push(entry);
    for (const entry of frame.data?.errors || []) {
      result.errors.push(entry);
      const track = this._tracks.get(entry.id);
      if (track) this._cancel(track.gapTimer);
      this._tracks.delete(entry.id);
    }
    this._syncAnswered(frame.requestId);
  }

  _syncAnswered(requestId) {
    this._syncing.delete(requestId);
    if (this._syncing.size > 0) return;
    const result = this._syncResult;
    this._syncResult = null;
    // whatever sync declared missing (or did not reach) comes over HTTP
    for (const entry of result?.conversations || []) {
      const track = this._tracks.get(entry.id);
      if (!track) continue;
      const upTo = track.held.size > 0 ? track.lowestHeld() - 1 : entry.lastSeq;
      if (upTo > track.last) this._fill(entry.id, track, upTo);
    }
    for (const [id, track] of this._tracks) {
      if (track.held.size > 0 && !track.filling) this._release(id, track);
    }
    if (result) this._emit("synced", result);
  }

  // -- HTTP API ----------------------------------------------------------------

  async _http(method, path, body) {
    if (typeof this._fetch !== "function") throw new TypeError("tornchat: no fetch; pass options.fetch");
    let retried = false;
    for (;;) {
      const token = this._token || (await this._freshToken());
      let response;
      try {
        response = await this._fetch(this._httpUrl + path, {
          method,
          headers: { Authorization: `Bearer ${token}`,
            ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
          body: body === undefined ? undefined : JSON.stringify(body),
          // a request that hangs would stop the gap recovery that waits on it
          signal: typeof AbortSignal?.timeout === "function"
            ? AbortSignal.timeout(this._options.httpTimeoutMs) : undefined,
        });
      } catch (err) { // the network, not the server: say so in the documented shape
        throw new TornchatError("unavailable", `HTTP request failed: ${err?.message || err}`, 0);
      }
      if (response.status === 401 && !retried && typeof this._options.token === "function") {
        retried = true; // the token ran out: one more try with a fresh one
        this._token = null;
        continue;
      }
      let data = null;
      try { data = await response.json(); } catch { /* an empty or non-JSON body */ }
      if (!response.ok) {
        throw new TornchatError(data?.code || "unavailable",
          data?.error || `HTTP ${response.status}`, response.status);
      }
      return data;
    }
  }

  listConversations(options = {}) {
    const query = new URLSearchParams();
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    if (options.cursor) query.set("cursor", options.cursor);
    const qs = query.toString();
    return this._http("GET", `/api/v1/conversations${qs ? `?${qs}` : ""}`).then((page) => {
      for (const conversation of page.conversations) {
        if (!this._tracks.has(conversation.id)) this.track(conversation.id, conversation.lastSeq);
      }
      return page;
    });
  }

  getConversation(conversationId) {
    return this._http("GET", `/api/v1/conversations/${encodeURIComponent(conversationId)}`);
  }

  getMessages(conversationId, options = {}) {
    const query = new URLSearchParams();
    for (const name of ["limit", "beforeSeq", "afterSeq"]) {
      if (options[name] !== undefined) query.set(name, String(options[name]));
    }
    const qs = query.toString();
    return this._http("GET",
      `/api/v1/conversations/${encodeURIComponent(conversationId)}/messages${qs ? `?${qs}` : ""}`);
  }

  openConversation(recipientIds) {
    return this._http("POST", "/api/v1/conversations", { recipientIds }).then((conversation) => {
      if (!this._tracks.has(conversation.id)) this.track(conversation.id, conversation.lastSeq);
      return conversation;
    });
  }

  async getPresence(userIds) {
    const answers = [];
    for (let i = 0; i < userIds.length; i += PRESENCE_PER_FRAME) { // the server's bound per call
      const query = new URLSearchParams({ userIds: userIds.slice(i, i + PRESENCE_PER_FRAME).join(",") });
      answers.push(...(await this._http("GET", `/api/v1/presence?${query}`)).presence);
    }
    return answers;
  }
}

export default TornchatClient;
