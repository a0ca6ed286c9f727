/**
 * RealtimeClient: a dependency-free browser client for the realtime backbone (docs/client.md).
 *
 * It speaks the wire contract of docs/protocol.md: one socket at `/ws/?token=`, `ref`-matched
 * acks, a `ping` heartbeat at the server's `heartbeat_interval`, reconnection with exponential
 * backoff and jitter, de-duplication of events by `event_id`, and the REST twins of the
 * typing/read/status/message frames while the socket is down.
 *
 * Delivery (docs/client.md, "Nothing lost, nothing twice"): the client keeps each
 * conversation's last contiguous `seq`, sends `resume` after every `connected`, hands durable
 * events (`message`, `read`, `member`) to its handlers once each and in `seq` order, refetches
 * by REST what the server cannot replay, and keeps every message it was asked to send in an
 * outbox under its own `client_id` until the server has stored it.
 */

export const CLOSE_NORMAL = 1000;
export const CLOSE_SERVICE_RESTART = 1012; // instance draining: another one will take us
export const CLOSE_SLOW_CONSUMER = 4008; // we read too slowly: reconnect and resume
export const CLOSE_UNAUTHORIZED = 4401; // bad token: retrying cannot help
export const CLOSE_FORBIDDEN = 4403; // user_id does not match the token: retrying cannot help
export const CLOSE_TOO_MANY = 4429; // too many sockets or flooding: back off hard

export const STATES = Object.freeze({
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

const EVENT_TYPES = new Set([
  "connected", "message", "typing", "read", "member", "presence", "error", "state", "resumed", "reset",
]);
/** Events that carry their conversation's `seq`; the others (typing, presence) carry none. */
export const DURABLE_TYPES = new Set(["message", "read", "member"]);
const NO_RETRY_CODES = new Set([CLOSE_UNAUTHORIZED, CLOSE_FORBIDDEN]);
// A socket-level failure after which a message may or may not have been stored: keep it in the
// outbox and send it again (its client_id makes the repeat harmless).
const RETRYABLE_SEND_CODES = new Set(["connection_lost", "not_connected", "timeout", "network_error"]);

/** An `error` frame (or a local failure) as a rejected promise's reason. */
export class RealtimeError extends Error {
  constructor(code, message, frame = null) {
    super(message || code);
    this.name = "RealtimeError";
    this.code = code;
    this.frame = frame;
  }
}

/**
 * The delay before reconnect attempt `attempt` (0-based), in milliseconds: exponential growth
 * capped at `max`, with "equal jitter" so that a thousand clients dropped by one instance do
 * not come back in the same millisecond, yet none waits less than half the nominal delay.
 */
export function backoffDelay(attempt, { initial = 500, max = 30000, factor = 2 } = {}, random = Math.random) {
  const nominal = Math.min(max, initial * Math.pow(factor, Math.max(0, attempt)));
  return Math.round(nominal / 2 + random() * (nominal / 2));
}

/** A set that remembers the last `limit` keys only (event ids are unbounded over a session). */
export class BoundedSet {
  constructor(limit = 1000) {
    this.limit = Math.max(1, limit);
    this.items = new Set();
  }

  has(key) {
    return this.items.has(key);
  }

  /** Adds `key`; returns false when it was already there. */
  add(key) {
    if (this.items.has(key)) return false;
    this.items.add(key);
    if (this.items.size > this.limit) {
      // Sets iterate in insertion order, so the first key is the oldest.
      this.items.delete(this.items.values().next().value);
    }
    return true;
  }

  get size() {
    return this.items.size;
  }
}

/** A fresh idempotency key for one message (at most 64 characters, as the server accepts). */
export function newClientId(random = Math.random) {
  if (random === Math.random && globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  let id = "";
  while (id.length < 32) id += Math.floor(random() * 16).toString(16);
  return id;
}

/**
 * One conversation's delivery state: `position` is the highest `seq` up to which the client has
 * every durable event; `held` keeps events that arrived ahead of a gap until it is filled.
 */
class Stream {
  constructor(position) {
    this.position = position;
    this.held = new Map(); // seq -> {frame, own}
    this.gapTimer = null;
    this.fetching = false;
  }

  get hasGap() {
    return this.held.size > 0;
  }
}

function defaultSocketUrl() {
  const loc = globalThis.location;
  if (!loc) throw new Error("RealtimeClient needs `url` outside a browser page");
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws/`;
}

export class RealtimeClient {
  /**
   * @param {object} options
   * @param {string} [options.url] WebSocket URL (default: `/ws/` on the page's host).
   * @param {string} options.token API token (POST /api/auth/token).
   * @param {string} [options.apiBase] Prefix for REST calls (default: the page's origin).
   * @param {number} [options.heartbeatInterval] Seconds between pings until the server says.
   * @param {object} [options.backoff] `{initial, max, factor}` in milliseconds.
   * @param {number} [options.ackTimeout] Milliseconds before an unanswered `send` rejects.
   * @param {number} [options.dedupSize] How many recent event ids to remember.
   * @param {boolean} [options.restFallback] Use REST for typing/read/status/message when down.
   * @param {boolean} [options.autoConnect] Connect at once (default true).
   * @param {object} [options.positions] `{conversationId: seq}` the app already has.
   * @param {number} [options.gapTimeout] Milliseconds an out-of-order event waits for the
   *   events before it to arrive before the client fetches them by REST.
   * @param {number} [options.refetchLimit] Most events fetched by REST to catch up one
   *   conversation; past it the client emits `reset` and the app reloads that conversation.
   * @param {boolean} [options.watchNetwork] Drop the socket on the browser's `offline` event
   *   and reconnect on `online` (default true in a page).
   */
  constructor(options = {}) {
    if (!options.token) throw new Error("RealtimeClient needs a token");
    this.token = options.token;
    this.url = options.url || defaultSocketUrl();
    this.apiBase = options.apiBase ?? (globalThis.location ? globalThis.location.origin : "");
    this.heartbeatInterval = options.heartbeatInterval ?? 20;
    this.backoff = { initial: 500, max: 30000, factor: 2, ...(options.backoff || {}) };
    this.ackTimeout = options.ackTimeout ?? 10000;
    this.restFallback = options.restFallback ?? true;
    this.WebSocketImpl = options.WebSocket || globalThis.WebSocket;
    this.fetchImpl = options.fetch || globalThis.fetch?.bind(globalThis);
    this.random = options.random || Math.random;

    this.state = STATES.CLOSED;
    this.socket = null;
    this.connection = null; // the `connected` frame of the current socket
    this.attempt = 0;
    this.lastClose = null; // {code, reason} of the last socket that closed
    this.seen = new BoundedSet(options.dedupSize ?? 1000);
    this.handlers = new Map();
    this.pending = new Map(); // ref -> {resolve, reject, timer}
    this.refCounter = 0;
    this.heartbeatTimer = null;
    this.reconnectTimer = null;
    this.lastFrameAt = 0;
    this.wanted = false; // true between connect() and close()

    this.gapTimeout = options.gapTimeout ?? 3000;
    this.refetchLimit = options.refetchLimit ?? 5000;
    this.streams = new Map(); // conversation id -> Stream
    for (const [id, seq] of Object.entries(options.positions || {})) this.setPosition(id, seq);
    this.outbox = new Map(); // client_id -> {conversation_id, body, client_id, resolve, reject, inFlight}
    this.outboxTimer = null;
    this.outboxAttempt = 0;
    this.resuming = null; // the pending resume's promise, between `connected` and its ack

    this.onOffline = () => this.dropSocket(4000, "browser offline");
    this.onOnline = () => {
      // Back online: the backoff was waiting out a network that is now there.
      if (this.wanted && !this.socket) {
        this.attempt = 0;
        this.connect();
      }
    };
    this.watchNetwork = (options.watchNetwork ?? true) && typeof globalThis.addEventListener === "function";

    if (options.autoConnect ?? true) this.connect();
  }

  /** The last contiguous `seq` per followed conversation, as sent in `resume`. */
  get positions() {
    const out = {};
    for (const [id, stream] of this.streams) out[id] = stream.position;
    return out;
  }

  /** How many messages wait for the server to store them. */
  get pendingMessages() {
    return this.outbox.size;
  }

  get instanceId() {
    return this.connection ? this.connection.instance_id : null;
  }

  get userId() {
    return this.connection ? this.connection.user_id : null;
  }

  get connectionId() {
    return this.connection ? this.connection.connection_id : null;
  }

  get isOpen() {
    return this.state === STATES.OPEN;
  }

  /** Subscribe to an event type; returns a function that unsubscribes. */
  on(type, handler) {
    if (!EVENT_TYPES.has(type)) throw new Error(`unknown event type: ${type}`);
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(handler);
    return () => this.off(type, handler);
  }

  off(type, handler) {
    this.handlers.get(type)?.delete(handler);
  }

  emit(type, data) {
    for (const handler of [...(this.handlers.get(type) || [])]) {
      try {
        handler(data);
      } catch (err) {
        // One broken handler must not starve the others (nor kill the socket's read loop).
        console.error(`RealtimeClient ${type} handler failed`, err);
      }
    }
  }

  setState(next, detail = {}) {
    if (this.state === next) return;
    const previous = this.state;
    this.state = next;
    this.emit("state", { state: next, previous, ...detail });
  }

  /** Open the socket (a no-op while one is open or opening). */
  connect() {
    this.wanted = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.watchNetwork && !this.listening) {
      globalThis.addEventListener("offline", this.onOffline);
      globalThis.addEventListener("online", this.onOnline);
      this.listening = true;
    }
    if (this.socket) return;
    if (this.state !== STATES.RECONNECTING) this.setState(STATES.CONNECTING);
    const sep = this.url.includes("?") ? "&" : "?";
    let socket;
    try {
      socket = new this.WebSocketImpl(`${this.url}${sep}token=${encodeURIComponent(this.token)}`);
    } catch (err) {
      this.scheduleReconnect({ code: 1006, reason: String(err) });
      return;
    }
    this.socket = socket;
    socket.onmessage = (ev) => this.handleFrame(socket, ev.data);
    socket.onclose = (ev) => this.handleClose(socket, ev.code, ev.reason);
    // An error is always followed by a close, which does the work.
    socket.onerror = () => {};
  }

  /** Close for good: no reconnection until connect() is called again. */
  close() {
    this.wanted = false;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    clearTimeout(this.outboxTimer);
    this.outboxTimer = null;
    if (this.listening) {
      globalThis.removeEventListener("offline", this.onOffline);
      globalThis.removeEventListener("online", this.onOnline);
      this.listening = false;
    }
    for (const stream of this.streams.values()) clearTimeout(stream.gapTimer);
    const socket = this.socket;
    const closed = new RealtimeError("closed", "client closed");
    this.teardown(closed);
    for (const entry of this.outbox.values()) entry.reject(closed);
    this.outbox.clear();
    if (socket) {
      try {
        socket.close(CLOSE_NORMAL);
      } catch (_err) {
        // already closing
      }
    }
    this.setState(STATES.CLOSED, { code: CLOSE_NORMAL });
  }

  teardown(reason) {
    this.stopHeartbeat();
    if (this.socket) {
      this.socket.onmessage = this.socket.onclose = this.socket.onerror = null;
    }
    this.socket = null;
    this.connection = null;
    this.resuming = null;
    for (const [ref, entry] of this.pending) {
      clearTimeout(entry.timer);
      entry.reject(reason);
      this.pending.delete(ref);
    }
  }

  handleClose(socket, code, reason) {
    if (socket !== this.socket) return;
    this.lastClose = { code, reason };
    this.teardown(new RealtimeError("connection_lost", `socket closed (${code})`));
    if (NO_RETRY_CODES.has(code)) {
      this.wanted = false;
      const err = new RealtimeError(
        code === CLOSE_UNAUTHORIZED ? "unauthorized" : "forbidden",
        code === CLOSE_UNAUTHORIZED ? "invalid or missing token" : "user_id does not match the token",
      );
      err.closeCode = code;
      this.emit("error", err);
      // Queued messages stay queued: setToken() with a fresh token and connect() sends them.
      this.setState(STATES.CLOSED, { code, reason, signedOut: code === CLOSE_UNAUTHORIZED });
      return;
    }
    if (!this.wanted) {
      this.setState(STATES.CLOSED, { code, reason });
      return;
    }
    this.scheduleReconnect({ code, reason });
  }

  scheduleReconnect({ code, reason }) {
    this.socket = null;
    let attempt = this.attempt;
    if (code === CLOSE_SERVICE_RESTART) {
      // A draining instance is healthy news: another instance is ready, so come back quickly.
      attempt = 0;
    } else if (code === CLOSE_TOO_MANY) {
      // Reconnecting fast would only be refused again.
      attempt = Math.max(attempt, 5);
    }
    const delay = backoffDelay(attempt, this.backoff, this.random);
    this.attempt = attempt + 1;
    this.setState(STATES.RECONNECTING, { code, reason, delay, attempt: this.attempt });
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.wanted) this.connect();
    }, delay);
  }

  /** Drop the current socket as if the network had (and reconnect as after any drop). */
  dropSocket(code = 4000, reason = "dropped") {
    const socket = this.socket;
    if (!socket) return;
    this.handleClose(socket, code, reason);
    try {
      socket.close();
    } catch (_err) {
      // already gone
    }
  }

  handleFrame(socket, raw) {
    if (socket !== this.socket) return;
    this.lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch (_err) {
      return; // the server only sends JSON; anything else is noise
    }
    if (!frame || typeof frame !== "object") return;
    if (frame.event_id !== undefined && !this.seen.add(frame.event_id)) return;

    switch (frame.type) {
      case "connected":
        this.connection = frame;
        this.attempt = 0;
        if (frame.heartbeat_interval) this.heartbeatInterval = Number(frame.heartbeat_interval);
        this.startHeartbeat();
        // The resume goes first, with the positions as they are: nothing a handler does in
        // answer to `connected` (a send, a track) can come between it and the socket's start.
        const resuming = this.resume();
        this.setState(STATES.OPEN, { instanceId: frame.instance_id });
        this.emit("connected", frame);
        if (!resuming) this.flushOutbox(); // else once the resume is answered
        return;
      case "pong":
        return;
      case "ack":
        this.settle(frame.ref, (entry) => entry.resolve(frame));
        return;
      case "error":
        if (frame.ref !== undefined && this.pending.has(frame.ref)) {
          this.settle(frame.ref, (entry) =>
            entry.reject(new RealtimeError(frame.code, frame.message, frame)),
          );
        } else {
          this.emit("error", new RealtimeError(frame.code, frame.message, frame));
        }
        return;
      default:
        if (DURABLE_TYPES.has(frame.type) && frame.seq != null && frame.conversation_id != null) {
          this.offer(frame);
        } else if (EVENT_TYPES.has(frame.type)) {
          this.emit(frame.type, frame);
        }
    }
  }

  /* ---------- sequence tracking ---------- */

  /**
   * Declare that the app has every durable event of `conversationId` up to `seq` (from REST:
   * `last_seq` of the conversation it just loaded). Positions only move forward.
   */
  setPosition(conversationId, seq) {
    const id = String(conversationId);
    const value = Math.max(0, Number(seq) || 0);
    const stream = this.streams.get(id);
    if (!stream) {
      this.streams.set(id, new Stream(value));
      return;
    }
    if (value <= stream.position) return;
    stream.position = value;
    for (const held of [...stream.held.keys()]) if (held <= value) stream.held.delete(held);
    this.drain(id, stream);
  }

  /**
   * Follow `conversationId` from `seq` unless it is followed already. Use it for a conversation
   * list loaded by REST: a position the client has is never moved past events it has not yet
   * delivered (a resume may be replaying them at this very moment).
   */
  track(conversationId, seq) {
    if (!this.streams.has(String(conversationId))) this.setPosition(conversationId, seq);
  }

  /** Stop following a conversation (the user left it): no resume, no refetch for it. */
  forget(conversationId) {
    const stream = this.streams.get(String(conversationId));
    if (stream) clearTimeout(stream.gapTimer);
    this.streams.delete(String(conversationId));
  }

  /**
   * A durable event from the socket, a resume replay, a REST refetch or (with `own`) the
   * client's own ack: emitted once per `seq`, in `seq` order.
   */
  offer(frame, { own = false } = {}) {
    const id = String(frame.conversation_id);
    const seq = Number(frame.seq);
    if (!Number.isInteger(seq) || seq < 1) return;
    let stream = this.streams.get(id);
    if (!stream) {
      // A conversation the app never told us about (one the user was just added to): its first
      // event we see is where we start from.
      stream = new Stream(seq - 1);
      this.streams.set(id, stream);
    }
    if (seq <= stream.position || stream.held.has(seq)) return; // had it already
    stream.held.set(seq, { frame, own });
    this.drain(id, stream);
  }

  drain(id, stream) {
    while (stream.held.has(stream.position + 1)) {
      const next = stream.position + 1;
      const { frame, own } = stream.held.get(next);
      stream.held.delete(next);
      stream.position = next;
      if (!own) this.deliver(frame);
      if (this.streams.get(id) !== stream) return; // forgotten by a handler or by deliver()
    }
    if (!stream.hasGap) {
      clearTimeout(stream.gapTimer);
      stream.gapTimer = null;
    } else if (!stream.gapTimer && !stream.fetching) {
      // The server delivers in order on an open socket and heals its own gaps; waiting a
      // little first avoids a REST call for an event that is merely in flight.
      stream.gapTimer = setTimeout(() => {
        stream.gapTimer = null;
        if (this.streams.get(id) === stream && stream.hasGap && this.isOpen && !this.resuming) {
          this.refetch(id);
        }
      }, this.gapTimeout);
    }
  }

  deliver(frame) {
    if (frame.type === "message") {
      const message = frame.message || {};
      const entry = message.client_id != null ? this.outbox.get(String(message.client_id)) : null;
      if (entry && String(message.sender_id) === String(this.userId ?? message.sender_id)) {
        // Our own message, stored before its ack was lost: the resend is no longer needed,
        // and the app learns of it through sendMessage's promise, not as someone's message.
        this.settleOutbox(entry, message);
        return;
      }
    }
    this.emit(frame.type, frame);
    if (
      frame.type === "member" &&
      frame.action === "removed" &&
      this.userId != null &&
      String(frame.user_id) === String(this.userId)
    ) {
      this.forget(frame.conversation_id); // the last event of that conversation for us
    }
  }

  /** A `seq` the server answered us with (an ack or a REST reply): ours, nothing to show. */
  noteOwn(conversationId, seq, frame = {}) {
    if (conversationId == null || seq == null) return;
    this.offer({ ...frame, conversation_id: conversationId, seq }, { own: true });
  }

  /**
   * Send `resume` for every followed conversation; the outbox goes once it is answered. False
   * when there is nothing to resume.
   */
  resume() {
    const positions = this.positions;
    const socket = this.socket;
    if (!Object.keys(positions).length) return false;
    const pending = this.sendFrame("resume", { positions });
    this.resuming = pending;
    pending.then(
      (ack) => {
        if (this.socket !== socket) return;
        this.resuming = null;
        this.applyResume(ack.conversations || {});
        this.emit("resumed", { conversations: ack.conversations || {} });
        this.flushOutbox();
      },
      (err) => {
        if (this.socket !== socket) return;
        this.resuming = null;
        // A server that cannot resume (or a timeout): catch up by REST instead.
        for (const id of this.streams.keys()) this.refetch(id);
        this.emit("error", err);
        this.flushOutbox();
      },
    );
    return true;
  }

  applyResume(conversations) {
    for (const [id, answer] of Object.entries(conversations)) {
      const stream = this.streams.get(String(id));
      if (!stream) continue;
      if (answer.recovered && (answer.seq == null || stream.position >= answer.seq) && !stream.hasGap) {
        continue;
      }
      if (!answer.recovered && answer.seq == null) {
        // Not (or no longer) a participant: nothing to catch up with.
        this.forget(id);
        this.emit("reset", { conversation_id: String(id), reason: "not_participant", seq: null });
        continue;
      }
      this.refetch(String(id), answer.seq);
    }
  }

  /**
   * Catch a conversation up by REST (`GET /api/conversations/{id}/events?after_seq=N`), page
   * after page; past `refetchLimit` events (or when the user no longer takes part) the app is
   * told to reload it with a `reset` event instead.
   */
  async refetch(id, latest = null) {
    const stream = this.streams.get(id);
    if (!stream || stream.fetching) return;
    if (latest != null && latest - stream.position > this.refetchLimit) {
      this.resetStream(id, stream, latest, "too_far_behind");
      return;
    }
    stream.fetching = true;
    clearTimeout(stream.gapTimer);
    stream.gapTimer = null;
    let fetched = 0;
    try {
      for (;;) {
        const from = stream.position;
        const page = await this.request(
          "GET",
          `/api/conversations/${encodeURIComponent(id)}/events?after_seq=${from}`,
        );
        if (this.streams.get(id) !== stream) return;
        const events = page?.events || [];
        for (const frame of events) {
          if (frame.event_id !== undefined) this.seen.add(frame.event_id);
          this.offer(frame);
          if (this.streams.get(id) !== stream) return;
        }
        fetched += events.length;
        const last = Number(page?.last_seq ?? from);
        if (stream.position >= last || !events.length) break;
        if (fetched >= this.refetchLimit) {
          this.resetStream(id, stream, last, "too_far_behind");
          return;
        }
      }
    } catch (err) {
      if (err.status === 403 || err.status === 404) {
        this.forget(id);
        this.emit("reset", { conversation_id: id, reason: "not_participant", seq: null });
        return;
      }
      // Offline again, or the server failed: the next resume (or gap timer) tries again.
    } finally {
      stream.fetching = false;
    }
    if (this.streams.get(id) === stream) this.drain(id, stream);
  }

  resetStream(id, stream, seq, reason) {
    stream.position = Math.max(stream.position, Number(seq));
    for (const held of [...stream.held.keys()]) if (held <= stream.position) stream.held.delete(held);
    this.emit("reset", { conversation_id: id, reason, seq: stream.position });
    this.drain(id, stream);
  }

  settle(ref, fn) {
    const entry = this.pending.get(ref);
    if (!entry) return;
    this.pending.delete(ref);
    clearTimeout(entry.timer);
    fn(entry);
  }

  startHeartbeat() {
    this.stopHeartbeat();
    const intervalMs = Math.max(100, this.heartbeatInterval * 1000);
    this.heartbeatTimer = setInterval(() => {
      if (!this.socket) return;
      // Two silent intervals (not even a pong) mean a half-open TCP connection: drop it.
      if (Date.now() - this.lastFrameAt > 2 * intervalMs + 1000) {
        const socket = this.socket;
        this.handleClose(socket, 4000, "heartbeat timeout");
        try {
          socket.close();
        } catch (_err) {
          // already gone
        }
        return;
      }
      this.rawSend({ type: "ping" });
    }, intervalMs);
  }

  stopHeartbeat() {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  rawSend(frame) {
    try {
      this.socket.send(JSON.stringify(frame));
      return true;
    } catch (_err) {
      return false;
    }
  }

  /**
   * Send a client frame; resolves with the `ack` frame, rejects with a RealtimeError built
   * from the `error` frame with the same `ref`. While the socket is down, typing/read/status/
   * message go through their REST twins (the result carries `via: "rest"`).
   */
  send(type, payload = {}) {
    if (!this.isOpen || !this.socket) {
      if (this.restFallback && REST_TWINS[type]) return this.sendRest(type, payload);
      return Promise.reject(new RealtimeError("not_connected", `socket is ${this.state}`));
    }
    return this.sendFrame(type, payload).then((ack) => {
      if (type === "read" && ack.seq != null) this.noteOwn(payload.conversation_id, ack.seq);
      return ack;
    });
  }

  /** `send` over the socket only (no REST twin). */
  sendFrame(type, payload = {}) {
    if (!this.socket || !this.connection) {
      return Promise.reject(new RealtimeError("not_connected", `socket is ${this.state}`));
    }
    const ref = `r${++this.refCounter}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(new RealtimeError("timeout", `no reply to ${type} within ${this.ackTimeout} ms`));
      }, this.ackTimeout);
      this.pending.set(ref, { resolve, reject, timer });
      if (!this.rawSend({ ...payload, type, ref })) {
        this.settle(ref, (entry) => entry.reject(new RealtimeError("not_connected", "send failed")));
      }
    });
  }

  sendRest(type, payload) {
    const twin = REST_TWINS[type];
    return this.request("POST", twin.path(payload), twin.body(payload)).then((body) => {
      if (type === "read" && body?.seq != null) this.noteOwn(payload.conversation_id, body.seq);
      return { type: "ack", via: "rest", ...twin.result(body) };
    });
  }

  /** An authenticated REST call; resolves with the JSON body, rejects with a RealtimeError. */
  async request(method, path, body) {
    const init = {
      method,
      headers: { Authorization: `Token ${this.token}`, Accept: "application/json" },
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await this.fetchImpl(`${this.apiBase}${path}`, init);
    } catch (err) {
      throw new RealtimeError("network_error", String(err));
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_err) {
      data = { detail: text };
    }
    if (!response.ok) {
      const err = new RealtimeError(`http_${response.status}`, data?.detail || response.statusText, data);
      err.status = response.status;
      throw err;
    }
    return data;
  }

  typing(conversationId, isTyping = true) {
    return this.send("typing", { conversation_id: conversationId, is_typing: isTyping });
  }

  markRead(conversationId, messageIds) {
    return this.send("read", { conversation_id: conversationId, message_ids: messageIds });
  }

  setStatus(status) {
    return this.send("status", { status });
  }

  /**
   * Send a message; resolves with the stored message (`{id, conversation_id, sender_id, body,
   * created_at, seq, client_id}`) once the server has it, however many reconnects that takes.
   * It waits in the outbox under its `client_id` (generated unless given) and is sent again
   * after every reconnect until acknowledged; the server stores it once. Rejects only when the
   * server refuses it (`invalid_payload`, `not_participant`, `http_400`, ...) or on close().
   */
  sendMessage(conversationId, body, { clientId } = {}) {
    const client_id = clientId || newClientId(this.random);
    const existing = this.outbox.get(client_id);
    if (existing) return existing.promise;
    const entry = { conversation_id: String(conversationId), body, client_id, inFlight: false };
    entry.promise = new Promise((resolve, reject) => {
      entry.resolve = resolve;
      entry.reject = reject;
    });
    this.outbox.set(client_id, entry);
    this.sendEntry(entry);
    return entry.promise;
  }

  /** Send every queued message that is not on its way already. */
  flushOutbox() {
    clearTimeout(this.outboxTimer);
    this.outboxTimer = null;
    for (const entry of [...this.outbox.values()]) this.sendEntry(entry);
  }

  sendEntry(entry) {
    if (entry.inFlight || !this.outbox.has(entry.client_id)) return;
    // While a resume is under way its replay may already hold this message: wait for the ack.
    if (this.resuming) return;
    const payload = { conversation_id: entry.conversation_id, body: entry.body, client_id: entry.client_id };
    let attempt;
    if (this.isOpen && this.socket) {
      attempt = this.sendFrame("message", payload).then((ack) => ack.message);
    } else if (this.restFallback && this.fetchImpl) {
      attempt = this.request("POST", REST_TWINS.message.path(payload), REST_TWINS.message.body(payload));
    } else {
      return; // sent when the socket opens
    }
    entry.inFlight = true;
    attempt.then(
      (message) => {
        entry.inFlight = false;
        this.outboxAttempt = 0;
        this.settleOutbox(entry, message);
      },
      (err) => {
        entry.inFlight = false;
        if (!this.outbox.has(entry.client_id)) return;
        if (RETRYABLE_SEND_CODES.has(err.code) || err.status === 429 || err.status >= 500) {
          this.retryOutboxLater();
          return;
        }
        this.outbox.delete(entry.client_id);
        entry.reject(err);
      },
    );
  }

  retryOutboxLater() {
    // A socket that opens flushes at once; this covers the REST path (socket blocked, server
    // briefly failing) and an ack that never came on a socket that stays open.
    if (this.outboxTimer || !this.wanted) return;
    const delay = backoffDelay(this.outboxAttempt++, this.backoff, this.random);
    this.outboxTimer = setTimeout(() => {
      this.outboxTimer = null;
      this.flushOutbox();
    }, delay);
  }

  settleOutbox(entry, message) {
    if (!this.outbox.has(entry.client_id)) return;
    this.outbox.delete(entry.client_id);
    if (message && message.seq != null) this.noteOwn(message.conversation_id ?? entry.conversation_id, message.seq);
    entry.resolve(message);
  }

  /**
   * Use a fresh token from now on: for REST calls, for the next reconnect, and (with an `auth`
   * frame) for the open socket, so a long-lived socket outlives its first token. Resolves with
   * the `ack` (`{user_id, expires_at}`; `null` when the socket is down and the token is simply
   * kept for the next connect). A token the server refuses (`invalid_payload`) rejects, and the
   * client keeps the one it had, as the socket does.
   */
  setToken(token) {
    if (!token) throw new Error("setToken needs a token");
    if (!this.isOpen || !this.socket) {
      this.token = token;
      return Promise.resolve(null);
    }
    return this.sendFrame("auth", { token }).then((ack) => {
      this.token = token;
      return ack;
    });
  }
}

const REST_TWINS = {
  typing: {
    path: (p) => `/api/conversations/${encodeURIComponent(p.conversation_id)}/typing`,
    body: (p) => ({ is_typing: p.is_typing }),
    result: (body) => body,
  },
  read: {
    path: () => "/api/messages/read",
    body: (p) => ({ conversation_id: p.conversation_id, message_ids: p.message_ids }),
    result: (body) => body,
  },
  status: {
    path: () => "/api/user/status",
    body: (p) => ({ status: p.status }),
    result: (body) => body,
  },
  message: {
    path: (p) => `/api/conversations/${encodeURIComponent(p.conversation_id)}/messages`,
    body: (p) => (p.client_id ? { body: p.body, client_id: p.client_id } : { body: p.body }),
    result: (body) => ({ message: body }),
  },
};

export default RealtimeClient;
