/**
 * RealtimeClient: a dependency-free browser client for the realtime backbone (docs/client.md).
 *
 * It speaks the wire contract of docs/protocol.md: one socket at `/ws/?token=`, `ref`-matched
 * acks, a `ping` heartbeat at the server's `heartbeat_interval`, reconnection with exponential
 * backoff and jitter, de-duplication of events by `event_id`, and the REST twins of the
 * typing/read/status/message frames while the socket is down.
 */

export const CLOSE_NORMAL = 1000;
export const CLOSE_SERVICE_RESTART = 1012; // instance draining: another one will take us
export const CLOSE_UNAUTHORIZED = 4401; // bad token: retrying cannot help
export const CLOSE_FORBIDDEN = 4403; // user_id does not match the token: retrying cannot help
export const CLOSE_TOO_MANY = 4429; // too many sockets or flooding: back off hard

export const STATES = Object.freeze({
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

const EVENT_TYPES = new Set(["connected", "message", "typing", "read", "presence", "error", "state"]);
const NO_RETRY_CODES = new Set([CLOSE_UNAUTHORIZED, CLOSE_FORBIDDEN]);

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

    if (options.autoConnect ?? true) this.connect();
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
    const socket = this.socket;
    this.teardown(new RealtimeError("closed", "client closed"));
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
      this.setState(STATES.CLOSED, { code, reason });
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
        this.setState(STATES.OPEN, { instanceId: frame.instance_id });
        this.emit("connected", frame);
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
        if (EVENT_TYPES.has(frame.type)) this.emit(frame.type, frame);
    }
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
    return this.request("POST", twin.path(payload), twin.body(payload)).then((body) => ({
      type: "ack",
      via: "rest",
      ...twin.result(body),
    }));
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

  /** Resolves with the stored message (`{id, conversation_id, sender_id, body, created_at}`). */
  sendMessage(conversationId, body) {
    return this.send("message", { conversation_id: conversationId, body }).then((ack) => ack.message);
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
    body: (p) => ({ body: p.body }),
    result: (body) => ({ message: body }),
  },
};

export default RealtimeClient;
