/**
 * The demo chat page (docs/client.md): sign in, conversations with presence, messages,
 * typing indicators, read receipts, membership and the connection state, all through
 * RealtimeClient. After a reconnect nothing is reloaded: the client resumes each conversation
 * from its last `seq`, and the page places every durable event by its `seq`.
 */
import { RealtimeClient, STATES, newClientId } from "../realtime/client.js";

const TOKEN_KEY = "realtime-demo.token";
const NAME_KEY = "realtime-demo.username";
const TYPING_THROTTLE_MS = 2000; // at most one "typing" frame per this interval
const TYPING_IDLE_MS = 3000; // silence after which we say "stopped typing"
const TYPING_SHOWN_MS = 6000; // a peer's indicator fades if their "stopped" never arrives
const READ_BATCH_MS = 300;
const HEALTH_POLL_MS = 15000;

const $ = (id) => document.getElementById(id);

const ui = {
  badge: $("connection-badge"),
  instance: $("instance-id"),
  account: $("account"),
  meName: $("me-name"),
  myStatus: $("my-status"),
  signOut: $("sign-out"),
  signIn: $("sign-in"),
  signInForm: $("sign-in-form"),
  signInError: $("sign-in-error"),
  chat: $("chat"),
  list: $("conversation-list"),
  listEmpty: $("conversations-empty"),
  title: $("conversation-title"),
  participants: $("participants"),
  messages: $("messages"),
  typing: $("typing"),
  composer: $("composer"),
  input: $("composer-input"),
  send: $("send"),
  composerError: $("composer-error"),
  back: $("back"),
  addForm: $("add-participant"),
  addUser: $("add-participant-user"),
  leave: $("leave"),
  membershipError: $("membership-error"),
};

const app = {
  client: null,
  me: { id: null, name: null },
  names: new Map(), // user id -> display name
  presence: new Map(), // user id -> status
  presenceAsked: 0, // snapshots requested so far
  presenceApplied: 0, // the newest snapshot applied
  presenceHeardAt: new Map(), // user id -> snapshots requested when an event last told us
  conversations: new Map(), // id -> {id, title, participant_ids, unread, created_by}
  current: null, // conversation id on screen
  typingPeers: new Map(), // `${conv}:${user}` -> timer
  readQueue: new Set(),
  readTimer: null,
  observer: null,
  typingSentAt: 0,
  typingIdleTimer: null,
  healthTimer: null,
  health: "unknown",
};

/* ---------- sign in / out ---------- */

async function signIn(event) {
  event.preventDefault();
  ui.signInError.hidden = true;
  const username = ui.signInForm.username.value.trim();
  const password = ui.signInForm.password.value;
  let response;
  try {
    response = await fetch("/api/auth/token", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ username, password }),
    });
  } catch (_err) {
    return showSignInError("The server cannot be reached.");
  }
  if (!response.ok) return showSignInError("Wrong username or password.");
  const { token } = await response.json();
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.setItem(NAME_KEY, username);
  if (app.client) {
    location.reload(); // signed out under our feet earlier: start from a clean page
    return;
  }
  start(token, username);
}

function showSignInError(text) {
  ui.signInError.textContent = text;
  ui.signInError.hidden = false;
}

function signOut() {
  app.client?.close();
  app.client = null;
  clearInterval(app.healthTimer);
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(NAME_KEY);
  location.reload();
}

/* ---------- the client ---------- */

function start(token, username) {
  app.me.name = username;
  ui.meName.textContent = username;
  ui.signIn.hidden = true;
  ui.account.hidden = false;
  ui.chat.hidden = false;
  // The socket opens once the conversation list is in: its `last_seq`s are where the first
  // `resume` starts, so nothing committed between the list and the socket is missed.
  const client = new RealtimeClient({ token, autoConnect: false });
  app.client = client;
  window.realtimeClient = client; // handy from the devtools console
  client.on("state", renderBadge);
  client.on("connected", onConnected);
  client.on("message", (ev) => onMessage(ev.message));
  client.on("typing", onTyping);
  client.on("read", onRead);
  client.on("member", onMember);
  client.on("reset", onReset);
  client.on("presence", (ev) => setPresence(ev.user_id, ev.status));
  client.on("error", (err) => {
    if (err.code === "unauthorized") signedOut();
  });
  renderBadge({ state: client.state });
  app.healthTimer = setInterval(pollHealth, HEALTH_POLL_MS);
  // The REST API works without the socket: show the conversations at once.
  loadIdentity()
    .then(loadConversations)
    .finally(() => client.connect());
}

/** The server closed the socket with 4401: the token is revoked or expired. */
function signedOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(app.healthTimer);
  app.signedOut = true;
  renderBadge({ state: STATES.CLOSED });
  ui.signIn.hidden = false;
  showSignInError("You were signed out. Sign in again to continue.");
  ui.signInForm.username.value = app.me.name || "";
  ui.input.disabled = ui.send.disabled = true;
}

async function loadIdentity() {
  try {
    const info = await app.client.request("GET", "/api/connections/info");
    if (!app.me.id && info?.user_id) app.me.id = String(info.user_id);
  } catch (_err) {
    // The `connected` frame says who we are too.
  }
}

async function onConnected(frame) {
  app.me.id = String(frame.user_id);
  app.names.set(app.me.id, app.me.name);
  ui.instance.textContent = frame.instance_id;
  document.body.dataset.instance = frame.instance_id;
  pollHealth();
  // The client resumes every conversation it follows; the list is reloaded only to learn of
  // conversations this user was added to while the socket was down.
  await loadConversations();
}

async function pollHealth() {
  try {
    const response = await fetch("/api/health", { headers: { Accept: "application/json" } });
    const body = await response.json();
    app.health = body.status || "unknown";
  } catch (_err) {
    app.health = "unknown";
  }
  renderBadge({ state: app.client?.state });
}

function renderBadge({ state, transport }) {
  // data-state is the socket's state; data-health what the server says of its backbone;
  // data-transport whether events come over a WebSocket or server-sent events.
  let label;
  const degraded = state === STATES.OPEN && app.health === "degraded";
  const streamed = (transport ?? app.client?.transport) === "sse";
  if (state === STATES.OPEN) {
    label = degraded ? "Degraded: the server has lost part of its backbone" : streamed ? "Live (event stream)" : "Live";
  } else if (state === STATES.RECONNECTING) {
    label = "Reconnecting… (sending through the API)";
    ui.instance.textContent = "–";
  } else if (state === STATES.CONNECTING) {
    label = "Connecting…";
  } else {
    label = app.signedOut || !app.client ? "Signed out" : "Offline";
  }
  ui.badge.dataset.state = state || STATES.CLOSED;
  ui.badge.dataset.health = degraded ? "degraded" : "ok";
  ui.badge.dataset.transport = streamed ? "sse" : "websocket";
  ui.badge.textContent = label;
}

/* ---------- conversations and presence ---------- */

async function loadConversations() {
  let page;
  try {
    page = await app.client.request("GET", "/api/conversations");
  } catch (_err) {
    return;
  }
  const items = Array.isArray(page) ? page : page?.results || [];
  for (const item of items) rememberConversation(item);
  ui.listEmpty.hidden = app.conversations.size > 0;
  await loadPresence();
  renderConversations();
  if (!app.current && items.length && window.matchMedia("(min-width: 48rem)").matches) {
    await openConversation(String(items[0].id));
  }
}

function rememberConversation(item) {
  const id = String(item.id);
  const known = app.conversations.get(id);
  const ids = (item.participant_ids || item.participants?.map((p) => p.id ?? p.user_id) || []).map(String);
  for (const p of item.participants || []) {
    if (p && typeof p === "object") app.names.set(String(p.id ?? p.user_id), p.username ?? p.name);
  }
  app.conversations.set(id, {
    id,
    title: item.title || "Untitled",
    participant_ids: ids,
    unread: known?.unread || 0,
  });
  // Follow it from what the list says; a conversation the client follows keeps its own position.
  if (item.last_seq != null) app.client.track(id, item.last_seq);
}

async function loadPresence() {
  const ids = new Set();
  for (const conv of app.conversations.values()) conv.participant_ids.forEach((id) => ids.add(id));
  if (!ids.size) return;
  // A snapshot may answer after a `presence` event that is newer than it, or after a later
  // snapshot: it only fills in users nothing newer has been heard about.
  const asked = ++app.presenceAsked;
  try {
    const body = await app.client.request("GET", `/api/users/status?ids=${[...ids].join(",")}`);
    if (asked < app.presenceApplied) return;
    app.presenceApplied = asked;
    for (const user of body.users || []) {
      const id = String(user.user_id);
      if ((app.presenceHeardAt.get(id) ?? -1) < asked) app.presence.set(id, user.status);
    }
  } catch (_err) {
    // Presence is decoration: the chat works without it.
  }
}

function setPresence(userId, status) {
  app.presenceHeardAt.set(String(userId), app.presenceAsked);
  app.presence.set(String(userId), status);
  renderConversations();
  renderParticipants();
}

function nameOf(userId) {
  const id = String(userId);
  if (id === app.me.id) return app.me.name;
  return app.names.get(id) || `user ${id}`;
}

function presenceDot(userId) {
  const status = app.presence.get(String(userId)) || "offline";
  const dot = document.createElement("span");
  dot.className = "dot";
  dot.dataset.status = status;
  dot.dataset.user = String(userId);
  dot.setAttribute("role", "img");
  dot.setAttribute("aria-label", `${nameOf(userId)}: ${status}`);
  dot.title = `${nameOf(userId)}: ${status}`;
  return dot;
}

function renderConversations() {
  ui.list.replaceChildren();
  for (const conv of app.conversations.values()) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "conversation-item";
    button.dataset.id = conv.id;
    if (conv.id === app.current) button.setAttribute("aria-current", "true");
    const title = document.createElement("span");
    title.className = "conversation-name";
    title.textContent = conv.title;
    const dots = document.createElement("span");
    dots.className = "dots";
    for (const id of conv.participant_ids) if (id !== app.me.id) dots.append(presenceDot(id));
    button.append(title, dots);
    if (conv.unread) {
      const unread = document.createElement("span");
      unread.className = "unread";
      unread.textContent = String(conv.unread);
      unread.setAttribute("aria-label", `${conv.unread} unread`);
      button.append(unread);
    }
    button.addEventListener("click", () => openConversation(conv.id));
    li.append(button);
    ui.list.append(li);
  }
}

function renderParticipants() {
  ui.participants.replaceChildren();
  const conv = app.conversations.get(app.current);
  ui.addForm.hidden = ui.leave.hidden = !conv;
  if (!conv) return;
  for (const id of conv.participant_ids) {
    const li = document.createElement("li");
    li.dataset.user = id;
    li.append(presenceDot(id), document.createTextNode(id === app.me.id ? `${nameOf(id)} (you)` : nameOf(id)));
    ui.participants.append(li);
  }
  // Anyone this user knows from another conversation can be added.
  const candidates = [...app.names.keys()].filter((id) => id !== app.me.id && !conv.participant_ids.includes(id));
  ui.addUser.replaceChildren(
    ...candidates.map((id) => {
      const option = document.createElement("option");
      option.value = id;
      option.textContent = nameOf(id);
      return option;
    }),
  );
  ui.addForm.hidden = candidates.length === 0;
}

/* ---------- membership ---------- */

async function onAddParticipant(event) {
  event.preventDefault();
  const convId = app.current;
  const userId = ui.addUser.value;
  if (!convId || !userId) return;
  ui.membershipError.hidden = true;
  try {
    const conversation = await app.client.request("POST", `/api/conversations/${convId}/participants`, {
      user_ids: [userId],
    });
    rememberConversation(conversation);
    renderParticipants();
    renderConversations();
  } catch (err) {
    showMembershipError(`Could not add ${nameOf(userId)}: ${err.message || err.code}`);
  }
}

async function onLeave() {
  const convId = app.current;
  if (!convId || !app.me.id) return;
  ui.membershipError.hidden = true;
  try {
    await app.client.request("DELETE", `/api/conversations/${convId}/participants/${app.me.id}`);
  } catch (err) {
    showMembershipError(`Could not leave: ${err.message || err.code}`);
    return;
  }
  dropConversation(convId);
}

function showMembershipError(text) {
  ui.membershipError.textContent = text;
  ui.membershipError.hidden = false;
}

function dropConversation(convId) {
  app.conversations.delete(convId);
  app.client.forget(convId);
  if (app.current === convId) {
    app.current = null;
    document.body.dataset.view = "list";
    ui.title.textContent = "Pick a conversation";
    ui.messages.replaceChildren();
    ui.input.disabled = ui.send.disabled = true;
  }
  ui.listEmpty.hidden = app.conversations.size > 0;
  renderConversations();
  renderParticipants();
}

async function onMember(ev) {
  const convId = String(ev.conversation_id);
  const userId = String(ev.user_id);
  if (userId === app.me.id && ev.action === "removed") {
    dropConversation(convId);
    return;
  }
  if (convId === app.current) appendNote(ev);
  try {
    // The event names a user id; the conversation says who that is.
    rememberConversation(await app.client.request("GET", `/api/conversations/${convId}`));
  } catch (_err) {
    return;
  }
  if (convId === app.current) ui.messages.querySelector(`[data-seq="${ev.seq}"]`)?.replaceWith(noteItem(ev));
  renderConversations();
  renderParticipants();
}

function noteItem(ev) {
  const li = document.createElement("li");
  li.className = "system-note";
  li.dataset.seq = String(ev.seq);
  const who = nameOf(ev.user_id);
  const by = nameOf(ev.by);
  if (ev.action === "added") {
    li.textContent = String(ev.by) === String(ev.user_id) ? `${who} joined` : `${by} added ${who}`;
  } else {
    li.textContent = String(ev.by) === String(ev.user_id) ? `${who} left` : `${by} removed ${who}`;
  }
  return li;
}

function appendNote(ev) {
  placeBySeq(noteItem(ev));
}

/** A conversation the server could not replay (too far behind, or no longer ours). */
async function onReset(ev) {
  const convId = String(ev.conversation_id);
  if (ev.reason === "not_participant") {
    dropConversation(convId);
    return;
  }
  await loadConversations();
  if (convId === app.current) await loadMessages(convId);
}

/* ---------- messages ---------- */

async function openConversation(id) {
  app.current = id;
  const conv = app.conversations.get(id);
  if (conv) conv.unread = 0;
  document.body.dataset.view = "conversation";
  ui.title.textContent = conv?.title || "Conversation";
  ui.input.disabled = ui.send.disabled = false;
  renderConversations();
  renderParticipants();
  renderTyping();
  await loadMessages(id);
  ui.input.focus({ preventScroll: true });
}

async function loadMessages(id) {
  let page;
  try {
    page = await app.client.request("GET", `/api/conversations/${id}/messages`);
  } catch (_err) {
    return;
  }
  if (app.current !== id) return;
  const items = Array.isArray(page) ? page : page?.results || [];
  resetObserver();
  // Messages still waiting in the outbox stay on screen, after the stored ones.
  const pending = [...ui.messages.querySelectorAll(`.message.pending[data-conversation="${CSS.escape(id)}"]`)];
  ui.messages.replaceChildren(...pending);
  // The API pages newest first; placing by seq puts them oldest first.
  for (const message of items) appendMessage(message);
  scrollToEnd();
}

/**
 * Insert `li` in `seq` order: replayed events can arrive after live ones. Items without a seq
 * (messages still being sent) stay at the end.
 */
function placeBySeq(li) {
  const seq = Number(li.dataset.seq);
  if (!li.dataset.seq || Number.isNaN(seq)) {
    ui.messages.append(li);
    return;
  }
  for (const other of ui.messages.children) {
    if (other === li) continue;
    const otherSeq = other.dataset.seq ? Number(other.dataset.seq) : Infinity;
    if (otherSeq > seq) {
      ui.messages.insertBefore(li, other);
      return;
    }
  }
  ui.messages.append(li);
}

function resetObserver() {
  app.observer?.disconnect();
  app.observer = new IntersectionObserver(onVisible, { root: ui.messages, threshold: 0.6 });
}

function appendMessage(message) {
  if (ui.messages.querySelector(`[data-id="${CSS.escape(String(message.id))}"]`)) return;
  if (message.client_id) {
    // Our own message, shown while it was being sent: it is stored now.
    const pending = ui.messages.querySelector(`[data-client-id="${CSS.escape(String(message.client_id))}"]`);
    if (pending) {
      markSent(pending, message);
      return;
    }
  }
  const li = messageItem(message);
  if (!li.classList.contains("mine")) app.observer?.observe(li);
  placeBySeq(li);
}

function markSent(li, message) {
  li.classList.remove("pending");
  li.dataset.id = String(message.id);
  if (message.seq != null) li.dataset.seq = String(message.seq);
  const when = li.querySelector("time");
  when.dateTime = message.created_at;
  when.textContent = new Date(message.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const receipt = li.querySelector(".receipt");
  receipt.textContent = "Sent";
  receipt.classList.remove("failed");
  placeBySeq(li);
}

function messageItem(message) {
  const mine = String(message.sender_id) === app.me.id;
  const li = document.createElement("li");
  li.className = mine ? "message mine" : "message";
  if (message.id != null) li.dataset.id = String(message.id);
  if (message.seq != null) li.dataset.seq = String(message.seq);
  if (message.client_id) li.dataset.clientId = String(message.client_id);
  li.dataset.sender = String(message.sender_id);
  const meta = document.createElement("p");
  meta.className = "meta";
  const who = document.createElement("span");
  who.className = "sender";
  who.textContent = mine ? "You" : nameOf(message.sender_id);
  const when = document.createElement("time");
  const created = message.created_at ? new Date(message.created_at) : new Date();
  when.dateTime = created.toISOString();
  when.textContent = created.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  meta.append(who, " · ", when);
  const body = document.createElement("p");
  body.className = "body";
  body.textContent = message.body;
  li.append(meta, body);
  if (mine) {
    const receipt = document.createElement("p");
    receipt.className = "receipt";
    receipt.textContent = message.id == null ? "Sending…" : "Sent";
    li.append(receipt);
  }
  return li;
}

function scrollToEnd() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function onMessage(message) {
  const convId = String(message.conversation_id);
  if (convId === app.current) {
    const atEnd = ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 80;
    appendMessage(message);
    if (atEnd) scrollToEnd();
    clearTyping(convId, String(message.sender_id));
  } else {
    const conv = app.conversations.get(convId);
    if (conv) conv.unread += 1;
    renderConversations();
  }
}

/* ---------- read receipts ---------- */

function onVisible(entries) {
  for (const entry of entries) {
    if (!entry.isIntersecting || document.visibilityState !== "visible") continue;
    app.readQueue.add(entry.target.dataset.id);
    app.observer.unobserve(entry.target);
  }
  if (app.readQueue.size && !app.readTimer) {
    app.readTimer = setTimeout(flushReads, READ_BATCH_MS);
  }
}

async function flushReads() {
  app.readTimer = null;
  const ids = [...app.readQueue];
  app.readQueue.clear();
  if (!ids.length || !app.current) return;
  try {
    await app.client.markRead(app.current, ids);
  } catch (_err) {
    // A lost receipt is harmless: the next visible message will carry the read state on.
  }
}

function onRead(ev) {
  if (String(ev.user_id) === app.me.id || String(ev.conversation_id) !== app.current) return;
  for (const id of ev.message_ids || []) {
    const li = ui.messages.querySelector(`[data-id="${CSS.escape(String(id))}"]`);
    const receipt = li?.querySelector(".receipt");
    if (!receipt) continue;
    const readers = new Set((li.dataset.readBy || "").split(",").filter(Boolean));
    readers.add(nameOf(ev.user_id));
    li.dataset.readBy = [...readers].join(",");
    receipt.textContent = `Read by ${[...readers].join(", ")}`;
    receipt.classList.add("read");
  }
}

/* ---------- typing ---------- */

function onComposerInput() {
  if (!app.current) return;
  const now = Date.now();
  if (ui.input.value && now - app.typingSentAt > TYPING_THROTTLE_MS) {
    app.typingSentAt = now;
    app.client.typing(app.current, true).catch(() => {});
  }
  clearTimeout(app.typingIdleTimer);
  app.typingIdleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  clearTimeout(app.typingIdleTimer);
  if (!app.typingSentAt || !app.current) return;
  app.typingSentAt = 0;
  app.client.typing(app.current, false).catch(() => {});
}

function onTyping(ev) {
  const key = `${ev.conversation_id}:${ev.user_id}`;
  clearTimeout(app.typingPeers.get(key));
  if (ev.is_typing) {
    app.typingPeers.set(key, setTimeout(() => clearTyping(String(ev.conversation_id), String(ev.user_id)), TYPING_SHOWN_MS));
  } else {
    app.typingPeers.delete(key);
  }
  renderTyping();
}

function clearTyping(convId, userId) {
  const key = `${convId}:${userId}`;
  clearTimeout(app.typingPeers.get(key));
  if (app.typingPeers.delete(key)) renderTyping();
}

function renderTyping() {
  const names = [];
  for (const key of app.typingPeers.keys()) {
    const [convId, userId] = key.split(":");
    if (convId === app.current && userId !== app.me.id) names.push(nameOf(userId));
  }
  ui.typing.textContent = names.length
    ? `${names.join(" and ")} ${names.length > 1 ? "are" : "is"} typing…`
    : "";
}

/* ---------- composer ---------- */

async function onSubmit(event) {
  event.preventDefault();
  const body = ui.input.value;
  const convId = app.current;
  if (!body.trim() || !convId) return;
  ui.composerError.hidden = true;
  ui.input.value = "";
  app.typingSentAt = 0; // the message itself ends the typing indicator for the others
  clearTimeout(app.typingIdleTimer);
  // Shown at once as "Sending…": offline it waits in the client's outbox and goes out (once,
  // thanks to its client_id) when the connection is back.
  const clientId = newClientId();
  const pending = messageItem({ sender_id: app.me.id, body, client_id: clientId });
  pending.classList.add("pending");
  pending.dataset.conversation = convId;
  placeBySeq(pending);
  scrollToEnd();
  ui.input.focus();
  try {
    const message = await app.client.sendMessage(convId, body, { clientId });
    if (app.current !== convId) return;
    const shown = ui.messages.querySelector(`[data-id="${CSS.escape(String(message.id))}"]`);
    if (shown && shown !== pending) pending.remove();
    else markSent(pending, message);
  } catch (err) {
    const receipt = pending.querySelector(".receipt");
    receipt.textContent = `Not sent: ${err.message || err.code}`;
    receipt.classList.add("failed");
    ui.composerError.textContent = `Not sent: ${err.message || err.code}. Try again.`;
    ui.composerError.hidden = false;
  }
}

function onComposerKey(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
}

/* ---------- wiring ---------- */

ui.signInForm.addEventListener("submit", signIn);
ui.signOut.addEventListener("click", signOut);
ui.composer.addEventListener("submit", onSubmit);
ui.input.addEventListener("input", onComposerInput);
ui.input.addEventListener("keydown", onComposerKey);
ui.input.addEventListener("blur", stopTyping);
ui.back.addEventListener("click", () => {
  document.body.dataset.view = "list";
  ui.list.querySelector("[aria-current]")?.focus();
});
ui.addForm.addEventListener("submit", onAddParticipant);
ui.leave.addEventListener("click", onLeave);
ui.myStatus.addEventListener("change", () => app.client?.setStatus(ui.myStatus.value).catch(() => {}));

const savedToken = sessionStorage.getItem(TOKEN_KEY);
if (savedToken) {
  start(savedToken, sessionStorage.getItem(NAME_KEY) || "me");
} else {
  ui.signInForm.username.focus();
}
