// Type declarations of tornchat.js, the browser and Node.js client of a
// tornchat server (wire contract version 2). Hand-written beside the module.

/** A stored message, as the server sends it. */
export interface Message {
  id: string;
  conversationId: string;
  senderId: string;
  content: string;
  /** ISO 8601 UTC with milliseconds */
  createdAt: string;
  /** position in its conversation: 1, 2, 3, ... without gaps */
  seq: number;
}

export interface Conversation {
  id: string;
  /** user ids, sorted, the caller included */
  participants: string[];
  createdAt: string;
  lastMessageAt: string | null;
  lastSeq: number;
  lastReadSeq: number;
  unreadCount: number;
  lastMessage: Message | null;
}

export interface ConversationPage {
  conversations: Conversation[];
  nextCursor: string | null;
}

export interface MessagePage {
  messages: Message[];
  hasMoreBefore: boolean;
  hasMoreAfter: boolean;
  lastSeq: number;
}

export interface ReadReceipt {
  conversationId: string;
  userId: string;
  lastReadSeq: number;
  readAt: string;
  /** only on the reader's own copy */
  unreadCount?: number;
}

export interface Typing {
  conversationId: string;
  userId: string;
}

export interface Presence {
  userId: string;
  status: "online" | "offline" | "unknown";
  lastSeenAt: string | null;
}

export type ConnectionState = "idle" | "connecting" | "connected" | "reconnecting" | "closed";

export interface StateEvent {
  state: ConnectionState;
  previous: ConnectionState;
  /** the WebSocket close code that caused the change, if one did */
  code?: number;
  /** the server's auth_error reason, or the close reason */
  reason?: string;
  /** for "reconnecting": milliseconds until the next attempt */
  retryInMs?: number;
}

export interface MessageEvent {
  message: Message;
  /** sent by the signed-in user (from this device or another) */
  own: boolean;
  /** fetched over HTTP to fill a gap (sync's replayed frames count as received) */
  recovered: boolean;
}

export interface SyncedEvent {
  /** the sync_done entries of every conversation the client knew */
  conversations: Array<{
    id: string;
    lastSeq: number;
    lastReadSeq: number;
    unreadCount: number;
    complete: boolean;
    missingBeforeSeq: number | null;
  }>;
  errors: Array<{ id: string; code: "forbidden" | "not_found" }>;
  /** false after the first connection, true after every reconnect */
  reconnect: boolean;
}

export interface ServerErrorEvent {
  code: string;
  error: string;
  requestId?: string;
  clientMessageId?: string;
}

export interface TornchatEvents {
  state: StateEvent;
  /** every message of every known conversation, once each, in seq order per conversation */
  message: MessageEvent;
  read: ReadReceipt;
  typing: Typing;
  presence: Presence;
  synced: SyncedEvent;
  /** an error frame not answered through a promise, or a failure the client recovers from */
  error: ServerErrorEvent;
}

export type TokenProvider = string | (() => string | Promise<string>);

export interface TornchatOptions {
  /** ws:// or wss:// URL of /api/v1/chat; in a browser, defaults to this page's host */
  url?: string;
  /** base URL of the HTTP API (scheme://host:port); derived from `url` by default */
  httpUrl?: string;
  /** a token, or a function called for a fresh one on every connect and refresh */
  token: TokenProvider;
  /** WebSocket constructor; default globalThis.WebSocket (in Node 20 pass the `ws` package) */
  WebSocket?: unknown;
  /** fetch function; default globalThis.fetch */
  fetch?: typeof fetch;
  /** first reconnect delay cap in ms (full jitter), default 500 */
  backoffInitialMs?: number;
  /** largest reconnect delay cap in ms, default 30000 */
  backoffMaxMs?: number;
  /** refresh the token at 80% of its remaining life, at least this long before it expires (ms),
   * default 60000, and never in its first half */
  refreshLeadMs?: number;
  /** at most one typing frame per conversation this often (ms), default 2000 */
  typingThrottleMs?: number;
  /** markRead waits this long for a higher seq before sending (ms), default 300 */
  markReadDebounceMs?: number;
  /** how long a live gap may stay open before it is fetched over HTTP (ms), default 400 */
  gapWaitMs?: number;
  /** entries per sync frame (the server's TORNCHAT_SYNC_MAX_CONVERSATIONS), default 200 */
  syncBatch?: number;
  /** send an application ping this often (ms), default 25000 */
  pingIntervalMs?: number;
  /** reconnect when a ping gets no answer within this (ms), default 10000 */
  pongTimeoutMs?: number;
  /** give up a connection attempt not authenticated within this (ms), default 15000 */
  connectTimeoutMs?: number;
  /** the server's MAX_MESSAGE_LENGTH: longer content is refused by send() at once, default 4000 */
  maxMessageLength?: number;
  /** a connection that held this long (ms) restarts the backoff, default 10000 */
  stableAfterMs?: number;
  /** sends that may go out at once (then sendPerSecond), default 30 */
  sendBurst?: number;
  /** sustained sends per second past the burst, default 15 */
  sendPerSecond?: number;
  /** an HTTP call (history, lists, presence) is abandoned after this (ms), default 15000 */
  httpTimeoutMs?: number;
}

export interface SendOptions {
  /** the conversation to post to (exactly one of conversationId and recipientIds) */
  conversationId?: string;
  /** find or create the conversation of the signed-in user and these users */
  recipientIds?: string[];
  content: string;
  /** idempotency key; generated when omitted */
  clientMessageId?: string;
}

/** An error the server answered (a rejected send, a failed HTTP call). */
export class TornchatError extends Error {
  readonly code: string;
  /** HTTP status for HTTP calls, undefined for socket errors */
  readonly status?: number;
  constructor(code: string, message: string, status?: number);
}

export class TornchatClient {
  constructor(options: TornchatOptions);

  readonly state: ConnectionState;
  /** the signed-in user, once authenticated */
  readonly userId: string | null;
  /** the current connection's id, while connected */
  readonly connectionId: string | null;
  /** sends waiting for message_sent (kept across reconnects) */
  readonly pendingSends: number;

  /** Connect and keep connected; resolves once authenticated the first time. */
  connect(): Promise<void>;
  /** Close for good (code 1000); pending sends are rejected with code "closed". */
  close(): void;
  // When the server ends the session for good (an invalid token 4001, 4003, 4029,
  // a protocol error), the state becomes "closed" and pending sends are rejected
  // ("unauthorized" or "closed"), as is every send() until connect() is called again.

  on<K extends keyof TornchatEvents>(event: K, listener: (data: TornchatEvents[K]) => void): () => void;
  off<K extends keyof TornchatEvents>(event: K, listener: (data: TornchatEvents[K]) => void): void;

  /**
   * Send a message; resolves with the stored message once acknowledged.
   * Retried across reconnects with the same clientMessageId until then.
   * Rejects with TornchatError: invalid_message (also at once for blank or too
   * long content, or an invalid clientMessageId), forbidden, not_found; closed or
   * unauthorized when the client stops for good before the acknowledgement.
   */
  send(options: SendOptions): Promise<Message>;
  /** Tell the others you are typing (throttled per conversation). */
  typing(conversationId: string): void;
  /** Move the read position (debounced per conversation; the highest seq wins). */
  markRead(conversationId: string, seq: number): void;
  /** Follow these users' presence; kept across reconnects. Every id given is
   * asked again (a user answered "unknown" is answered anew once you share a conversation). */
  subscribePresence(userIds: string[]): void;
  unsubscribePresence(userIds: string[]): void;

  /** The highest seq delivered for a conversation, or undefined if not known. */
  lastSeq(conversationId: string): number | undefined;
  /** Start tracking a conversation from this seq (history shown, list loaded). */
  track(conversationId: string, seq: number): void;

  listConversations(options?: { limit?: number; cursor?: string }): Promise<ConversationPage>;
  getConversation(conversationId: string): Promise<Conversation>;
  getMessages(conversationId: string,
              options?: { limit?: number; beforeSeq?: number; afterSeq?: number }): Promise<MessagePage>;
  openConversation(recipientIds: string[]): Promise<Conversation>;
  /** Presence over HTTP, in requests of at most 100 ids. */
  getPresence(userIds: string[]): Promise<Presence[]>;
}

export default TornchatClient;
