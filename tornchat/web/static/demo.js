// The tornchat demo chat page (docs/demo.md): a small chat app on the
// TornchatClient of /client/tornchat.js, with no build step and no framework.
//
// The client delivers every message of every known conversation once, in seq
// order; the page keeps, per conversation, only what the list shows (head seq,
// the user's read position, the last message) and, for the open one, the
// messages on screen keyed by seq, so history pages and live or recovered
// messages merge without doubles. User content only ever goes through
// textContent. The data-testid attributes are a contract (tests/web).

import { TornchatClient } from "/client/tornchat.js";

const HISTORY_PAGE = 50;
const LIST_PAGE = 100;
const LIST_MAX = 500;
const TYPING_SHOWN_MS = 4000;
const NOTICE_MS = 6000;
/** a cached dev token is renewed when it has less than this left */
const TOKEN_MARGIN_MS = 120_000;
/** this close to the top, the next page of history loads */
const TOP_THRESHOLD_PX = 40;
const BOTTOM_STICK_PX = 80;
const STORED_USER = "tornchat-demo-user";
const TITLE = "tornchat demo";

const STATUS_TEXT = {
  idle: "signed out",
  connecting: "connecting…",
  connected: "connected",
  reconnecting: "reconnecting…",
  closed: "offline",
};

const $ = (id) => document.getElementById(id);
const ui = {
  loginView: $("login-view"), loginForm: $("login-form"), loginUser: $("login-user"),
  loginJwt: $("login-jwt"), loginSubmit: $("login-submit"), loginError: $("login-error"),
  chatView: $("chat-view"), meName: $("me-name"), meAvatar: $("me-avatar"),
  status: $("connection-status"), signOut: $("sign-out"),
  newChatForm: $("new-chat-form"), newChatUsers: $("new-chat-users"),
  newChatSubmit: $("new-chat-submit"), newChatError: $("new-chat-error"), notice: $("notice"),
  list: $("conversation-list"), listEmpty: $("list-empty"),
  threadEmpty: $("thread-empty"), thread: $("thread"), back: $("back"),
  threadAvatar: $("thread-avatar"), threadName: $("thread-name"),
  threadSubtitle: $("thread-subtitle"), messages: $("messages"), historyTop: $("history-top"),
  messageList: $("message-list"), typing: $("typing-indicator"),
  composerForm: $("composer-form"), composer: $("composer"), send: $("send"),
};

/** the signed-in session, or null; async work checks it is still current */
let session = null;

// ---------------------------------------------------------------- helpers

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function hue(userId) {
  let h = 0;
  for (const ch of userId) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return `hue-${h % 8}`;
}

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth()
    && a.getDate() === b.getDate();
}

function clock(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function shortTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return sameDay(date, new Date()) ? clock(iso)
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

function fullTime(iso) {
  const date = new Date(iso);
  return sameDay(date, new Date()) ? clock(iso)
    : `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${clock(iso)}`;
}

function errorText(error) {
  return (error && (error.message || error.code)) || String(error);
}

function showError(node, text) {
  node.textContent = text || "";
  node.hidden = !text;
}

function notice(text) {
  const s = session;
  showError(ui.notice, text);
  clearTimeout(s && s.noticeTimer);
  if (s) s.noticeTimer = setTimeout(() => showError(ui.notice, ""), NOTICE_MS);
}

function listText(names) {
  if (names.length <= 1) return names.join("");
  return `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
}

// ---------------------------------------------------------------- sign-in

async function fetchDevToken(userId) {
  const response = await fetch("/api/v1/dev/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ userId }),
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 404) {
    throw new Error("This server issues no dev tokens (production mode): paste a JWT.");
  }
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

/** A token provider that reuses a dev token until it nears expiry (or is refused). */
function devTokens(first) {
  let current = first;
  const provider = async () => {
    if (!current || Date.parse(current.expiresAt) - Date.now() < TOKEN_MARGIN_MS) {
      current = await fetchDevToken(first.userId);
    }
    return current.token;
  };
  provider.invalidate = () => { current = null; };
  return provider;
}

async function signIn(userId, jwt) {
  showError(ui.loginError, "");
  ui.loginSubmit.disabled = true;
  let token;
  try {
    // a pasted JWT is a fixed string: the client cannot refresh it and stops
    // by itself when it expires, instead of asking for it again and again
    token = jwt || devTokens(await fetchDevToken(userId));
  } catch (error) {
    showError(ui.loginError, errorText(error));
    ui.loginSubmit.disabled = false;
    return;
  }
  if (!jwt) {
    try { localStorage.setItem(STORED_USER, userId); } catch { /* storage off */ }
  }
  const s = {
    client: new TornchatClient({ token }),
    token,
    jwt: Boolean(jwt),
    me: jwt ? null : userId,
    authenticated: false,
    conversations: new Map(),
    presence: new Map(),
    subscribed: new Set(),
    open: null,
    noticeTimer: 0,
    off: [],
  };
  session = s;
  const on = (name, handler) => s.off.push(s.client.on(name, (data) => {
    if (session === s) handler(s, data);
  }));
  on("state", onState);
  on("message", onMessage);
  on("read", onRead);
  on("typing", onTyping);
  on("presence", onPresence);
  on("synced", onSynced);
  on("error", (_s, error) => {
    console.warn("tornchat:", error.code, error.error);
    notice(error.error || error.code);
  });
  showChat(s);
  try {
    await s.client.connect();
  } catch (error) {
    if (session === s) signOut(`Could not sign in: ${errorText(error)}`);
    return;
  }
  if (session !== s) return;
  s.authenticated = true;
  s.me = s.client.userId;
  renderMe(s);
  await loadConversations(s);
}

function signOut(error) {
  const s = session;
  session = null;
  if (s) {
    s.open = null; // a history page still on its way must not land in the next session
    s.off.forEach((off) => off());
    for (const entry of s.conversations.values()) entry.typing.forEach(clearTimeout);
    clearTimeout(s.noticeTimer);
    s.client.close();
  }
  ui.list.replaceChildren();
  ui.messageList.replaceChildren();
  ui.chatView.hidden = true;
  ui.chatView.classList.remove("thread-open");
  ui.loginView.hidden = false;
  ui.loginSubmit.disabled = false;
  document.title = TITLE;
  showError(ui.loginError, error || "");
  showError(ui.notice, "");
  ui.loginUser.focus();
}

function showChat(s) {
  ui.loginView.hidden = true;
  ui.chatView.hidden = false;
  ui.chatView.classList.remove("thread-open");
  ui.thread.hidden = true;
  ui.threadEmpty.hidden = false;
  ui.newChatUsers.value = "";
  showError(ui.newChatError, "");
  renderMe(s);
  renderStatus(s.client.state === "idle" ? "connecting" : s.client.state);
  renderList(s);
}

function renderMe(s) {
  const name = s.me || "…";
  ui.meName.textContent = name;
  ui.meAvatar.textContent = name.slice(0, 1);
  ui.meAvatar.className = `avatar ${s.me ? hue(s.me) : ""}`;
}

function renderStatus(state) {
  ui.status.textContent = STATUS_TEXT[state] || state;
  ui.status.className = `status ${state === "connected" ? "live" : ""}`
    + `${state === "closed" || state === "idle" ? " offline" : ""}`;
}

// ---------------------------------------------------------------- client events

function onState(s, event) {
  renderStatus(event.state);
  if (event.state === "connected") {
    s.me = s.client.userId;
    renderMe(s);
  }
  if (event.code === 4001) {
    if (s.jwt) {
      // only a close for good: an authentication timeout (a slow link) is retried
      if (event.state === "closed") signOut(`The token was refused: ${event.reason || "invalid token"}`);
      return;
    }
    s.token.invalidate();
  }
  if (event.state === "closed" && event.previous !== "idle" && event.reason) {
    notice(`Connection closed: ${event.reason}`);
  }
}

function onMessage(s, { message, own }) {
  const entry = ensureConversation(s, message.conversationId, message.senderId);
  if (message.seq > entry.lastSeq) {
    entry.lastSeq = message.seq;
    entry.lastMessage = message;
    entry.lastMessageAt = message.createdAt;
  }
  if (own) {
    entry.myReadSeq = Math.max(entry.myReadSeq, message.seq);
  } else {
    noteRead(entry, message.senderId, message.seq);
    stopTyping(s, entry, message.senderId);
  }
  const view = s.open;
  if (view && view.id === entry.id) {
    const stick = own || nearBottom();
    addMessages(s, view, [message]);
    if (stick) scrollToBottom();
    markShownRead(s);
  }
  renderConversation(s, entry);
  renderList(s);
}

function onRead(s, receipt) {
  const entry = s.conversations.get(receipt.conversationId);
  if (!entry) return;
  if (receipt.userId === s.me) {
    entry.myReadSeq = Math.max(entry.myReadSeq, receipt.lastReadSeq);
    renderConversation(s, entry);
    renderTitle(s);
  } else {
    noteRead(entry, receipt.userId, receipt.lastReadSeq);
    if (s.open && s.open.id === entry.id) renderReceipt(s, s.open);
  }
}

function onTyping(s, { conversationId, userId }) {
  const entry = s.conversations.get(conversationId);
  if (!entry || userId === s.me) return;
  clearTimeout(entry.typing.get(userId));
  entry.typing.set(userId, setTimeout(() => stopTyping(s, entry, userId), TYPING_SHOWN_MS));
  renderTyping(s, entry);
}

function onPresence(s, { userId, status }) {
  s.presence.set(userId, status);
  for (const entry of s.conversations.values()) {
    if (entry.others.length === 1 && entry.others[0] === userId) renderConversation(s, entry);
  }
  if (s.open) renderThreadHeader(s, s.conversations.get(s.open.id));
}

function onSynced(s, event) {
  for (const known of event.conversations) {
    const entry = s.conversations.get(known.id);
    if (entry) entry.myReadSeq = Math.max(entry.myReadSeq, known.lastReadSeq);
  }
  // sync covers the conversations the client knew; the list brings new ones
  if (event.reconnect && s.authenticated) loadConversations(s);
  else renderList(s);
}

// ---------------------------------------------------------------- conversations

function newEntry(id) {
  return {
    id, participants: [], others: [], createdAt: null, lastMessageAt: null, lastSeq: 0,
    myReadSeq: 0, lastMessage: null, readBy: new Map(), typing: new Map(), pending: new Set(),
    el: null, parts: null,
  };
}

/** Merge a CONVERSATION from the HTTP API into the page's entry for it. */
function upsertConversation(s, conversation) {
  let entry = s.conversations.get(conversation.id);
  if (!entry) {
    entry = newEntry(conversation.id);
    s.conversations.set(conversation.id, entry);
  }
  entry.participants = conversation.participants;
  entry.others = conversation.participants.filter((id) => id !== s.me);
  entry.createdAt = conversation.createdAt;
  if (conversation.lastSeq >= entry.lastSeq) {
    entry.lastSeq = conversation.lastSeq;
    entry.lastMessage = conversation.lastMessage;
    entry.lastMessageAt = conversation.lastMessageAt;
  }
  entry.myReadSeq = Math.max(entry.myReadSeq, conversation.lastReadSeq);
  const last = conversation.lastMessage;
  if (last && last.senderId !== s.me) noteRead(entry, last.senderId, last.seq);
  if (s.client.lastSeq(conversation.id) === undefined) {
    s.client.track(conversation.id, conversation.lastSeq);
  }
  subscribePresence(s, entry.others);
  renderConversation(s, entry);
  return entry;
}

/** The entry of a conversation a message arrived in, fetched if it is new to the page. */
function ensureConversation(s, id, senderId) {
  let entry = s.conversations.get(id);
  if (entry) return entry;
  entry = newEntry(id);
  entry.participants = [...new Set([s.me, senderId])].sort();
  entry.others = entry.participants.filter((user) => user !== s.me);
  s.conversations.set(id, entry);
  s.client.getConversation(id).then((conversation) => {
    if (session === s) {
      upsertConversation(s, conversation);
      renderList(s);
      if (s.open && s.open.id === id) renderThreadHeader(s, entry);
    }
  }, (error) => console.warn("tornchat: conversation", id, errorText(error)));
  return entry;
}

async function loadConversations(s) {
  let cursor;
  let count = 0;
  try {
    do {
      const page = await s.client.listConversations({ limit: LIST_PAGE, cursor });
      if (session !== s) return;
      page.conversations.forEach((conversation) => upsertConversation(s, conversation));
      count += page.conversations.length;
      cursor = page.nextCursor || undefined;
    } while (cursor && count < LIST_MAX);
  } catch (error) {
    if (session === s) notice(`Could not load conversations: ${errorText(error)}`);
  }
  if (session === s) renderList(s);
}

/** A participant who sent seq N, or read up to it, has read everything up to N. */
function noteRead(entry, userId, seq) {
  entry.readBy.set(userId, Math.max(entry.readBy.get(userId) || 0, seq));
}

function subscribePresence(s, userIds) {
  const fresh = userIds.filter((id) => !s.subscribed.has(id));
  if (!fresh.length) return;
  fresh.forEach((id) => s.subscribed.add(id));
  s.client.subscribePresence(fresh);
}

function unread(entry) {
  return Math.max(0, entry.lastSeq - entry.myReadSeq);
}

function conversationName(entry) {
  return entry.others.length ? entry.others.join(", ") : `${entry.participants[0] || ""} (you)`;
}

function sortKey(entry) {
  return entry.lastMessageAt || entry.createdAt || "";
}

function buildItem(s, entry) {
  const item = el("li", "conversation");
  item.dataset.testid = "conversation";
  item.dataset.conversationId = entry.id;
  item.setAttribute("role", "option");
  item.tabIndex = 0;
  const parts = {
    avatar: el("span", "avatar"), dot: el("span", "presence-dot"),
    name: el("span", "conversation-name"), time: el("time", "conversation-time"),
    preview: el("span", "conversation-preview"), unread: el("span", "unread"),
  };
  parts.avatar.setAttribute("aria-hidden", "true");
  parts.unread.dataset.testid = "unread-count";
  const top = el("div", "conversation-top");
  top.append(parts.name, parts.time);
  const body = el("div", "conversation-body");
  body.append(top, parts.preview);
  item.append(parts.avatar, body, parts.unread);
  item.addEventListener("click", () => openConversation(s, entry.id));
  item.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      openConversation(s, entry.id);
    }
  });
  entry.el = item;
  entry.parts = parts;
}

function renderConversation(s, entry) {
  if (!entry.el) buildItem(s, entry);
  const { avatar, dot, name, time, preview, unread: badge } = entry.parts;
  const group = entry.others.length > 1;
  const title = conversationName(entry);
  name.textContent = title;
  name.title = title;
  avatar.className = `avatar ${group ? "group" : hue(entry.others[0] || s.me || "")}`;
  avatar.textContent = group ? String(entry.participants.length) : title.slice(0, 1);
  if (!group && entry.others.length === 1) {
    const online = s.presence.get(entry.others[0]) === "online";
    dot.className = `presence-dot ${online ? "online" : ""}`;
    dot.title = online ? "online" : "offline";
    avatar.append(dot);
  }
  time.textContent = shortTime(entry.lastMessageAt);
  if (entry.lastMessageAt) time.dateTime = entry.lastMessageAt;
  renderPreview(s, entry);
  const count = unread(entry);
  badge.textContent = count ? String(count) : "";
  badge.setAttribute("aria-label", count ? `${count} unread` : "no unread messages");
  entry.el.classList.toggle("has-unread", count > 0);
  entry.el.setAttribute("aria-selected", String(Boolean(s.open && s.open.id === entry.id)));
}

function renderPreview(s, entry) {
  const { preview } = entry.parts;
  const typing = [...entry.typing.keys()];
  preview.classList.toggle("typing-now", typing.length > 0);
  if (typing.length) {
    preview.textContent = typingText(entry, typing);
    return;
  }
  const last = entry.lastMessage;
  if (!last) {
    preview.textContent = "No messages yet";
    return;
  }
  const who = last.senderId === s.me ? "You: "
    : entry.others.length > 1 ? `${last.senderId}: ` : "";
  preview.textContent = who + last.content.replace(/\s+/g, " ");
}

/** Put the items in newest-first order, moving only those out of place. */
function renderList(s) {
  const entries = [...s.conversations.values()].filter((entry) => entry.participants.length);
  entries.sort((a, b) => sortKey(b).localeCompare(sortKey(a)) || a.id.localeCompare(b.id));
  entries.forEach((entry, index) => {
    if (!entry.el) renderConversation(s, entry);
    if (ui.list.children[index] !== entry.el) {
      ui.list.insertBefore(entry.el, ui.list.children[index] || null);
    }
  });
  ui.listEmpty.hidden = entries.length > 0;
  renderTitle(s);
}

function renderTitle(s) {
  let total = 0;
  for (const entry of s.conversations.values()) total += unread(entry);
  document.title = total ? `(${total}) ${TITLE}` : TITLE;
}

async function startChat(s, text) {
  showError(ui.newChatError, "");
  const ids = [...new Set(text.split(",").map((id) => id.trim()).filter(Boolean))]
    .filter((id) => id !== s.me);
  if (!ids.length) {
    showError(ui.newChatError, "Enter one or more user ids, separated by commas.");
    return;
  }
  ui.newChatSubmit.disabled = true;
  try {
    const conversation = await s.client.openConversation(ids);
    if (session !== s) return;
    upsertConversation(s, conversation);
    renderList(s);
    ui.newChatUsers.value = "";
    await openConversation(s, conversation.id);
  } catch (error) {
    if (session === s) showError(ui.newChatError, errorText(error));
  } finally {
    ui.newChatSubmit.disabled = false;
  }
}

// ---------------------------------------------------------------- the open conversation

async function openConversation(s, id) {
  const entry = s.conversations.get(id);
  if (!entry) return;
  ui.chatView.classList.add("thread-open");
  if (s.open && s.open.id === id) {
    if (s.open.failed) loadOlder(s, s.open); // clicking it again retries a failed load
    ui.composer.focus();
    return;
  }
  const previous = s.open && s.conversations.get(s.open.id);
  const view = {
    id, seqs: [], items: new Map(), hasMoreBefore: true, loading: false, failed: false,
    receipt: el("li", "receipt", ""),
  };
  view.receipt.dataset.testid = "read-receipt";
  view.receipt.hidden = true;
  s.open = view;
  if (previous) renderConversation(s, previous);
  renderConversation(s, entry);
  ui.threadEmpty.hidden = true;
  ui.thread.hidden = false;
  ui.messageList.replaceChildren(view.receipt);
  ui.historyTop.textContent = "";
  ui.composer.value = "";
  resizeComposer();
  renderThreadHeader(s, entry);
  renderTyping(s, entry);
  renderPending(s, entry);
  if (s.client.lastSeq(id) === undefined) s.client.track(id, entry.lastSeq);
  ui.composer.focus();
  await loadOlder(s, view);
}

function closeConversation(s) {
  const view = s.open;
  s.open = null;
  ui.chatView.classList.remove("thread-open");
  ui.thread.hidden = true;
  ui.threadEmpty.hidden = false;
  ui.messageList.replaceChildren();
  if (view) renderConversation(s, s.conversations.get(view.id));
}

function renderThreadHeader(s, entry) {
  if (!entry) return;
  const group = entry.others.length > 1;
  const title = conversationName(entry);
  ui.threadName.textContent = title;
  ui.threadName.title = title;
  ui.threadAvatar.className = `avatar ${group ? "group" : hue(entry.others[0] || s.me || "")}`;
  ui.threadAvatar.textContent = group ? String(entry.participants.length) : title.slice(0, 1);
  if (group) {
    ui.threadSubtitle.textContent = `${entry.participants.length} people`;
  } else if (entry.others.length === 1) {
    const status = s.presence.get(entry.others[0]);
    ui.threadSubtitle.textContent = status === "online" ? "online"
      : status === "offline" ? "offline" : "";
  } else {
    ui.threadSubtitle.textContent = "notes to yourself";
  }
}

/** Load the page of history just before the oldest message shown (the newest first). */
async function loadOlder(s, view) {
  if (view.loading || !view.hasMoreBefore) return;
  view.loading = true;
  ui.historyTop.textContent = "Loading…";
  const options = { limit: HISTORY_PAGE };
  const initial = view.seqs.length === 0 || view.failed === "initial";
  if (!initial) options.beforeSeq = view.seqs[0];
  let page;
  try {
    page = await s.client.getMessages(view.id, options);
  } catch (error) {
    if (session === s && s.open === view) {
      view.loading = false;
      view.failed = initial ? "initial" : "older";
      ui.historyTop.textContent = `Could not load messages (${errorText(error)}); tap here to retry.`;
    }
    return;
  }
  if (session !== s || s.open !== view) return;
  view.loading = false;
  view.failed = false;
  const fromBottom = ui.messages.scrollHeight - ui.messages.scrollTop;
  addMessages(s, view, page.messages);
  view.hasMoreBefore = page.hasMoreBefore && page.messages.length > 0;
  ui.historyTop.textContent = view.hasMoreBefore ? "" : "This is the start of the conversation.";
  if (initial) scrollToBottom();
  else ui.messages.scrollTop = ui.messages.scrollHeight - fromBottom;
  markShownRead(s);
  // a short page that does not fill the pane leaves nothing to scroll: load more now
  if (view.hasMoreBefore && ui.messages.scrollHeight <= ui.messages.clientHeight) {
    await loadOlder(s, view);
  }
}

/** Insert messages of the open conversation in seq order, each once. */
function addMessages(s, view, messages) {
  const entry = s.conversations.get(view.id);
  for (const message of messages) {
    if (message.conversationId !== view.id || view.items.has(message.seq)) continue;
    const own = message.senderId === s.me;
    if (!own) noteRead(entry, message.senderId, message.seq);
    const item = renderMessage(message, own, entry.others.length > 1);
    let low = 0;
    let high = view.seqs.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (view.seqs[mid] < message.seq) low = mid + 1;
      else high = mid;
    }
    // the sends still pending stay at the bottom
    const next = low < view.seqs.length ? view.items.get(view.seqs[low]).node
      : ui.messageList.querySelector(".pending");
    ui.messageList.insertBefore(item, next);
    view.seqs.splice(low, 0, message.seq);
    view.items.set(message.seq, { node: item, own });
  }
  renderReceipt(s, view);
}

function renderMessage(message, own, group) {
  const item = el("li", `message ${own ? "own" : "other"}`);
  item.dataset.testid = "message";
  item.dataset.seq = String(message.seq);
  item.dataset.sender = message.senderId;
  if (group && !own) item.append(el("span", "sender", message.senderId));
  item.append(el("div", "bubble", message.content));
  const time = el("time", "meta", fullTime(message.createdAt));
  time.dateTime = message.createdAt;
  time.title = new Date(message.createdAt).toLocaleString();
  item.append(time);
  return item;
}

/** "Seen" under the last own message once another participant has read up to it. */
function renderReceipt(s, view) {
  const entry = s.conversations.get(view.id);
  let lastOwn = null;
  for (let i = view.seqs.length - 1; i >= 0; i--) {
    if (view.items.get(view.seqs[i]).own) {
      lastOwn = view.seqs[i];
      break;
    }
  }
  const readers = lastOwn === null ? []
    : entry.others.filter((id) => (entry.readBy.get(id) || 0) >= lastOwn);
  view.receipt.hidden = readers.length === 0;
  if (!readers.length) return;
  view.receipt.textContent = entry.others.length > 1 ? `Seen by ${listText(readers)}` : "Seen";
  const after = view.items.get(lastOwn).node;
  if (after.nextSibling !== view.receipt) after.after(view.receipt);
}

/** Tell the server (and the list) that what is on screen has been read. */
function markShownRead(s) {
  const view = s.open;
  if (!view || !view.seqs.length || document.visibilityState !== "visible") return;
  const entry = s.conversations.get(view.id);
  const highest = view.seqs[view.seqs.length - 1];
  if (highest <= entry.myReadSeq) return;
  s.client.markRead(view.id, highest);
  entry.myReadSeq = highest;
  renderConversation(s, entry);
  renderTitle(s);
}

function typingText(entry, users) {
  if (users.length > 2) return "several people are typing…";
  return `${listText(users)} ${users.length > 1 ? "are" : "is"} typing…`;
}

function stopTyping(s, entry, userId) {
  if (!entry.typing.has(userId)) return;
  clearTimeout(entry.typing.get(userId));
  entry.typing.delete(userId);
  renderTyping(s, entry);
}

function renderTyping(s, entry) {
  if (entry.el) renderPreview(s, entry);
  if (!s.open || s.open.id !== entry.id) return;
  const users = [...entry.typing.keys()];
  ui.typing.textContent = users.length ? typingText(entry, users) : "";
  ui.typing.hidden = users.length === 0;
}

function nearBottom() {
  const pane = ui.messages;
  return pane.scrollHeight - pane.scrollTop - pane.clientHeight < BOTTOM_STICK_PX;
}

function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

// ---------------------------------------------------------------- sending

/** Sends not yet acknowledged (the client retries them across reconnects), under the list. */
function renderPending(s, entry) {
  const view = s.open;
  if (!view || view.id !== entry.id) return;
  ui.messageList.querySelectorAll(".pending").forEach((node) => node.remove());
  for (const send of entry.pending) {
    const item = el("li", `message own pending${send.error ? " failed" : ""}`);
    item.dataset.testid = "pending-message";
    item.append(el("div", "bubble", send.content));
    item.append(el("span", "meta", send.error ? `not sent: ${send.error} (click to dismiss)`
      : "sending…"));
    if (send.error) {
      item.addEventListener("click", () => {
        entry.pending.delete(send);
        renderPending(s, entry);
      });
    }
    ui.messageList.append(item);
  }
}

function sendFromComposer(s) {
  const view = s.open;
  const content = ui.composer.value.trim();
  ui.composer.focus();
  if (!view || !content) return;
  const entry = s.conversations.get(view.id);
  ui.composer.value = "";
  resizeComposer();
  const send = { content, error: null };
  entry.pending.add(send);
  renderPending(s, entry);
  scrollToBottom();
  s.client.send({ conversationId: view.id, content }).then(() => {
    entry.pending.delete(send);
  }, (error) => {
    send.error = error.code || errorText(error);
  }).finally(() => {
    if (session === s) renderPending(s, entry);
  });
}

function resizeComposer() {
  ui.composer.rows = Math.min(5, Math.max(1, ui.composer.value.split("\n").length));
}

// ---------------------------------------------------------------- wiring

function wire() {
  try { ui.loginUser.value = localStorage.getItem(STORED_USER) || ""; } catch { /* off */ }
  ui.loginForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const jwt = ui.loginJwt.value.trim();
    const userId = ui.loginUser.value.trim();
    if (!jwt && !userId) {
      showError(ui.loginError, "Enter a user id (or paste a JWT).");
      return;
    }
    signIn(userId, jwt).catch((error) => signOut(errorText(error)));
  });
  ui.signOut.addEventListener("click", () => signOut());
  ui.newChatForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (session) startChat(session, ui.newChatUsers.value);
  });
  ui.back.addEventListener("click", () => session && closeConversation(session));
  ui.messages.addEventListener("scroll", () => {
    const s = session;
    if (s && s.open && ui.messages.scrollTop < TOP_THRESHOLD_PX) loadOlder(s, s.open);
  });
  ui.historyTop.addEventListener("click", () => {
    const s = session;
    if (s && s.open && s.open.failed) loadOlder(s, s.open);
  });
  ui.composerForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (session) sendFromComposer(session);
  });
  // the composer keeps the focus when the button is clicked
  ui.send.addEventListener("mousedown", (event) => event.preventDefault());
  ui.composer.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (session) sendFromComposer(session);
    }
  });
  ui.composer.addEventListener("input", () => {
    resizeComposer();
    const s = session;
    if (s && s.open && ui.composer.value.trim()) s.client.typing(s.open.id);
  });
  document.addEventListener("visibilitychange", () => session && markShownRead(session));
  window.addEventListener("focus", () => session && markShownRead(session));
  ui.loginUser.focus();
}

wire();
