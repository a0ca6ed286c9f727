/**
 * RealtimeClient: the WebSocket client of the realtime backbone (docs/client.md).
 *
 * It speaks the wire contract of docs/protocol.md: one socket at `/ws/?token=`, `ref`-matched
 * acks, a `ping` heartbeat at the server's `heartbeat_interval`, de-duplication by `event_id`,
 * the REST twins of the typing/read/status/message frames while the socket is down, and
 * reconnection: full-jitter backoff, the server's `1013 retry_after_ms=N` hint, `1012` drains
 * answered at once, a failover list of URLs taken round robin, and a token-refresh callback.
 *
 * Delivery (docs/client.md, "Nothing lost, nothing twice"): the client keeps each
 * conversation's last contiguous `seq`, sends `resume` after every `connected`, hands durable
 * events (`message`, `read`, `member`) to its handlers once each and in `seq` order, refetches
 * by REST what the server cannot replay, and keeps every message it was asked to send in an
 * outbox under its own `client_id` until the server has stored it.
 */
import { backoffDelay, DEFAULT_BACKOFF, hintedDelay, retryAfterMs, } from "./backoff.js";
import { EVENT_TYPES, STATES, } from "./events.js";
import { CLOSE_FORBIDDEN, CLOSE_NORMAL, CLOSE_SERVICE_RESTART, CLOSE_TOO_MANY, CLOSE_TRY_AGAIN_LATER, CLOSE_UNAUTHORIZED, } from "./protocol.js";
import { CLOSE_BAD_CURSOR, EventStreamSocket, streamUrl } from "./stream.js";
import { BoundedSet, newClientId, RealtimeError } from "./util.js";
export * from "./backoff.js";
export * from "./events.js";
export * from "./protocol.js";
export * from "./stream.js";
export * from "./util.js";
/** Events that carry their conversation's `seq`; the others (typing, presence) carry none. */
export const DURABLE_TYPES = new Set(["message", "read", "member"]);
const SERVER_EVENT_TYPES = new Set([
    "message",
    "typing",
    "read",
    "member",
    "presence",
]);
// A socket-level failure after which a message may or may not have been stored: keep it in the
// outbox and send it again (its client_id makes the repeat harmless).
const RETRYABLE_SEND_CODES = new Set(["connection_lost", "not_connected", "timeout", "network_error"]);
// Step of the backoff a 4429 starts from: reconnecting fast would only be refused again.
const TOO_MANY_ATTEMPT = 5;
// setTimeout fires at once past 2^31 - 1 ms (about 24.8 days; tokens live 30 days by default):
// a longer wait is taken in steps.
const MAX_TIMER_MS = 2 ** 31 - 1;
/**
 * One conversation's delivery state: `position` is the highest `seq` up to which the client has
 * every durable event; `held` keeps events that arrived ahead of a gap until it is filled.
 */
class Stream {
    position;
    held = new Map();
    gapTimer = null;
    fetching = false;
    constructor(position) {
        this.position = position;
    }
    get hasGap() {
        return this.held.size > 0;
    }
}
function defaultSocketUrl() {
    const loc = globalThis.location;
    if (!loc)
        throw new Error("RealtimeClient needs `url` outside a browser page");
    return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws/`;
}
/** `ws://host:port/ws/` -> `http://host:port`: REST goes to the instance the socket uses. */
function httpOrigin(socketUrl) {
    try {
        const url = new URL(socketUrl);
        const scheme = url.protocol === "wss:" ? "https:" : url.protocol === "ws:" ? "http:" : url.protocol;
        return `${scheme}//${url.host}`;
    }
    catch {
        return "";
    }
}
function expiryMs(value) {
    if (value == null)
        return null;
    const ms = value instanceof Date ? value.getTime() : typeof value === "number" ? value : Date.parse(value);
    return Number.isFinite(ms) ? ms : null;
}
const asRecord = (body) => body && typeof body === "object" ? body : {};
const REST_TWINS = {
    typing: {
        path: (p) => `/api/conversations/${encodeURIComponent(String(p.conversation_id))}/typing`,
        body: (p) => ({ is_typing: p.is_typing }),
        result: asRecord,
    },
    read: {
        path: () => "/api/messages/read",
        body: (p) => ({ conversation_id: p.conversation_id, message_ids: p.message_ids }),
        result: asRecord,
    },
    status: {
        path: () => "/api/user/status",
        body: (p) => ({ status: p.status }),
        result: asRecord,
    },
    message: {
        path: (p) => `/api/conversations/${encodeURIComponent(String(p.conversation_id))}/messages`,
        body: (p) => (p.client_id ? { body: p.body, client_id: p.client_id } : { body: p.body }),
        result: (body) => ({ message: body }),
    },
};
export class RealtimeClient {
    token;
    /** The failover list; `url` is the one in use. */
    urls;
    heartbeatInterval;
    backoff;
    ackTimeout;
    restFallback;
    gapTimeout;
    refetchLimit;
    seen;
    /** What carries events now: `websocket`, or `sse` (then writes go through REST). */
    transport;
    /** The last `id:` of the stream: its `Last-Event-ID` on the next stream connect. */
    lastEventId = null;
    transportMode;
    fallbackAttempts;
    websocketRetryInterval;
    state = STATES.CLOSED;
    /** The `connected` frame of the current socket. */
    connection = null;
    /** `{code, reason}` of the last socket that closed. */
    lastClose = null;
    /** The pending resume, between `connected` and its ack. */
    resuming = null;
    explicitApiBase;
    WebSocketImpl;
    fetchImpl;
    random;
    refresher;
    refreshMargin;
    maxRetryAfter;
    tokenExpiresAt;
    tokenStale = false;
    urlIndex = 0;
    socket = null;
    opening = false;
    attempt = 0;
    handlers = new Map();
    pending = new Map();
    refCounter = 0;
    heartbeatTimer = null;
    tokenTimer = null;
    reconnectTimer = null;
    lastFrameAt = 0;
    wanted = false; // true between connect() and close()
    wsFailures = 0; // WebSocket opens in a row that ended before `connected`
    cursorSent = false; // the current stream was opened with a Last-Event-ID
    catchUp = new Set(); // conversations a stream cannot replay: REST owes them
    probeTimer = null;
    probe = null;
    streams = new Map();
    outbox = new Map();
    outboxTimer = null;
    outboxAttempt = 0;
    watchNetwork;
    listening = false;
    onOffline = () => this.dropSocket(4000, "browser offline");
    onOnline = () => {
        // Back online: the backoff was waiting out a network that is now there.
        if (this.wanted && !this.socket && !this.opening) {
            this.attempt = 0;
            this.connect();
        }
    };
    constructor(options = {}) {
        if (!options.token && !options.refreshToken) {
            throw new Error("RealtimeClient needs a token or a refreshToken callback");
        }
        this.token = options.token || null;
        this.tokenExpiresAt = expiryMs(options.tokenExpiresAt);
        this.refresher = options.refreshToken ?? null;
        this.refreshMargin = options.tokenRefreshMargin ?? 60_000;
        const urls = options.url === undefined ? [defaultSocketUrl()] : [options.url].flat();
        if (!urls.length || urls.some((u) => typeof u !== "string" || !u)) {
            throw new Error("RealtimeClient needs `url` as a URL or a non-empty list of them");
        }
        this.urls = Object.freeze([...urls]);
        this.explicitApiBase = options.apiBase ?? null;
        this.heartbeatInterval = options.heartbeatInterval ?? 20;
        this.backoff = { ...DEFAULT_BACKOFF, ...(options.backoff ?? {}) };
        this.maxRetryAfter = options.maxRetryAfter ?? 5 * 60_000;
        this.ackTimeout = options.ackTimeout ?? 10_000;
        this.restFallback = options.restFallback ?? true;
        this.WebSocketImpl =
            options.WebSocket ?? globalThis.WebSocket;
        this.fetchImpl = options.fetch ?? globalThis.fetch?.bind(globalThis);
        this.random = options.random ?? Math.random;
        this.seen = new BoundedSet(options.dedupSize ?? 1000);
        this.transportMode = options.transport ?? "auto";
        if (!["auto", "websocket", "sse"].includes(this.transportMode)) {
            throw new Error("RealtimeClient `transport` must be auto, websocket or sse");
        }
        this.transport = this.transportMode === "sse" ? "sse" : "websocket";
        this.fallbackAttempts = Math.max(1, options.fallbackAttempts ?? 2);
        this.websocketRetryInterval = options.websocketRetryInterval ?? 5 * 60_000;
        this.lastEventId = options.lastEventId ?? null;
        this.gapTimeout = options.gapTimeout ?? 3000;
        this.refetchLimit = options.refetchLimit ?? 5000;
        for (const [id, seq] of Object.entries(options.positions ?? {}))
            this.setPosition(id, seq);
        this.watchNetwork =
            (options.watchNetwork ?? true) && typeof globalThis.addEventListener === "function";
        if (options.autoConnect ?? true)
            this.connect();
    }
    /** The socket URL in use (or tried next). */
    get url() {
        return this.urls[this.urlIndex];
    }
    /** Prefix of REST calls: the explicit `apiBase`, else the origin of the socket URL in use. */
    get apiBase() {
        return this.explicitApiBase ?? httpOrigin(this.url);
    }
    /** The last contiguous `seq` per followed conversation, as sent in `resume`. */
    get positions() {
        const out = {};
        for (const [id, stream] of this.streams)
            out[id] = stream.position;
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
        if (!EVENT_TYPES.has(type))
            throw new Error(`unknown event type: ${String(type)}`);
        let set = this.handlers.get(type);
        if (!set) {
            set = new Set();
            this.handlers.set(type, set);
        }
        set.add(handler);
        return () => this.off(type, handler);
    }
    off(type, handler) {
        this.handlers.get(type)?.delete(handler);
    }
    emit(type, data) {
        for (const handler of [...(this.handlers.get(type) ?? [])]) {
            try {
                handler(data);
            }
            catch (err) {
                // One broken handler must not starve the others (nor kill the socket's read loop).
                console.error(`RealtimeClient ${type} handler failed`, err);
            }
        }
    }
    setState(next, detail = {}) {
        if (this.state === next)
            return;
        const previous = this.state;
        this.state = next;
        this.emit("state", { state: next, previous, transport: this.transport, ...detail });
    }
    /* ---------- the connection ---------- */
    /** Open the socket (a no-op while one is open or opening). */
    connect() {
        this.wanted = true;
        if (this.reconnectTimer !== null)
            clearTimeout(this.reconnectTimer);
        this.reconnectTimer = null;
        if (this.watchNetwork && !this.listening) {
            globalThis.addEventListener("offline", this.onOffline);
            globalThis.addEventListener("online", this.onOnline);
            this.listening = true;
        }
        if (this.socket || this.opening)
            return;
        if (this.state !== STATES.RECONNECTING)
            this.setState(STATES.CONNECTING);
        if (this.needsFreshToken()) {
            void this.refreshThenOpen();
            return;
        }
        this.open();
    }
    needsFreshToken() {
        if (!this.refresher)
            return false;
        if (this.tokenStale || !this.token)
            return true;
        return this.tokenExpiresAt !== null && Date.now() + this.refreshMargin >= this.tokenExpiresAt;
    }
    async refreshThenOpen() {
        this.opening = true;
        const code = this.tokenStale ? (this.lastClose?.code ?? CLOSE_UNAUTHORIZED) : undefined;
        let grant;
        try {
            grant = await this.refresher(this.tokenStale || !this.token ? { reason: "unauthorized", code } : { reason: "expiring" });
        }
        catch (err) {
            this.opening = false;
            if (!this.wanted)
                return;
            // The app's backend could not answer now: not a sign-out, try again after a backoff.
            this.emit("error", new RealtimeError("token_refresh_failed", String(err)));
            this.scheduleReconnect(code ?? 1006, "token refresh failed", "dropped");
            return;
        }
        this.opening = false;
        if (!this.wanted)
            return;
        const token = typeof grant === "string" ? grant : grant?.token;
        if (!token) {
            this.signOut(code ?? CLOSE_UNAUTHORIZED, this.lastClose?.reason ?? "no fresh token");
            return;
        }
        this.token = token;
        this.tokenStale = false;
        this.tokenExpiresAt = typeof grant === "string" ? null : expiryMs(grant?.expires_at);
        this.open();
    }
    open() {
        if (this.transport === "sse") {
            this.openStream();
            return;
        }
        const WebSocketImpl = this.WebSocketImpl;
        const url = this.url;
        this.emit("connecting", { url, attempt: this.attempt });
        const sep = url.includes("?") ? "&" : "?";
        let socket;
        try {
            if (!WebSocketImpl)
                throw new Error("no WebSocket constructor (pass the `WebSocket` option)");
            socket = new WebSocketImpl(`${url}${sep}token=${encodeURIComponent(this.token ?? "")}`);
        }
        catch (err) {
            this.lastClose = { code: 1006, reason: String(err) };
            this.noteWebSocketFailure();
            this.emit("disconnected", { code: 1006, reason: String(err), url, willReconnect: true });
            this.scheduleReconnect(1006, String(err), "dropped");
            return;
        }
        this.socket = socket;
        socket.onmessage = (ev) => this.handleFrame(socket, ev.data);
        socket.onclose = (ev) => this.handleClose(socket, ev.code, ev.reason);
        // An error is always followed by a close, which does the work.
        socket.onerror = () => { };
    }
    /** Open the stream (`GET /api/events/stream`) with the last cursor, if any. */
    openStream() {
        const url = streamUrl(this.apiBase);
        this.emit("connecting", { url, attempt: this.attempt });
        if (!this.fetchImpl) {
            this.emit("disconnected", { code: 1006, reason: "no fetch", url, willReconnect: true });
            this.scheduleReconnect(1006, "no fetch implementation", "dropped");
            return;
        }
        this.cursorSent = this.lastEventId !== null;
        const socket = new EventStreamSocket({
            fetch: this.fetchImpl,
            url,
            token: this.token ?? "",
            lastEventId: this.lastEventId,
            onEventId: (id) => {
                if (this.socket === socket)
                    this.lastEventId = id;
            },
        });
        this.socket = socket;
        socket.onmessage = (ev) => this.handleFrame(socket, ev.data);
        socket.onclose = (ev) => this.handleClose(socket, ev.code, ev.reason);
    }
    /**
     * A WebSocket that never reached `connected` without a close code (refused upgrade, blocked
     * port, no constructor): after `fallbackAttempts` of them in a row on every URL, `auto`
     * takes the stream. A close code means the upgrade got through, so it does not count.
     */
    noteWebSocketFailure() {
        if (this.transportMode !== "auto" || this.transport !== "websocket")
            return;
        // Offline, every connect fails: that says nothing about WebSockets.
        if (globalThis.navigator?.onLine === false)
            return;
        this.wsFailures += 1;
        if (this.wsFailures < this.fallbackAttempts * this.urls.length)
            return;
        this.wsFailures = 0;
        this.transport = "sse";
        // The stream starts without a cursor: what the WebSocket had is caught up by REST.
        this.lastEventId = null;
    }
    /** On the stream for a while: open a WebSocket on the side; if it connects, move back. */
    scheduleProbe() {
        if (this.probeTimer !== null || this.transportMode !== "auto" || this.transport !== "sse")
            return;
        this.probeTimer = setTimeout(() => {
            this.probeTimer = null;
            this.probeWebSocket();
        }, this.websocketRetryInterval);
    }
    probeWebSocket() {
        if (!this.wanted || this.transport !== "sse" || this.probe || !this.WebSocketImpl)
            return;
        const sep = this.url.includes("?") ? "&" : "?";
        let probe;
        try {
            probe = new this.WebSocketImpl(`${this.url}${sep}token=${encodeURIComponent(this.token ?? "")}`);
        }
        catch {
            this.scheduleProbe();
            return;
        }
        this.probe = probe;
        const done = () => {
            probe.onmessage = probe.onclose = probe.onerror = null;
            if (this.probe === probe)
                this.probe = null;
        };
        probe.onerror = () => { };
        probe.onclose = () => {
            done();
            this.scheduleProbe();
        };
        probe.onmessage = (ev) => {
            let type;
            try {
                type = JSON.parse(String(ev.data)).type;
            }
            catch {
                type = null;
            }
            done();
            try {
                probe.close(CLOSE_NORMAL);
            }
            catch {
                // already closing
            }
            if (type !== "connected" || !this.wanted || this.transport !== "sse") {
                this.scheduleProbe();
                return;
            }
            // WebSockets get through again: end the stream and reconnect over one; its resume
            // starts from the positions, so nothing is lost or shown twice in the switch.
            this.transport = "websocket";
            this.wsFailures = 0;
            this.dropSocket(CLOSE_SERVICE_RESTART, "websocket available");
        };
    }
    stopProbe() {
        if (this.probeTimer !== null)
            clearTimeout(this.probeTimer);
        this.probeTimer = null;
        const probe = this.probe;
        this.probe = null;
        if (probe) {
            probe.onmessage = probe.onclose = probe.onerror = null;
            try {
                probe.close(CLOSE_NORMAL);
            }
            catch {
                // already closing
            }
        }
    }
    /** Close for good: no reconnection until connect() is called again. */
    close() {
        this.wanted = false;
        if (this.reconnectTimer !== null)
            clearTimeout(this.reconnectTimer);
        this.reconnectTimer = null;
        if (this.outboxTimer !== null)
            clearTimeout(this.outboxTimer);
        this.outboxTimer = null;
        this.stopProbe();
        if (this.listening) {
            globalThis.removeEventListener("offline", this.onOffline);
            globalThis.removeEventListener("online", this.onOnline);
            this.listening = false;
        }
        for (const stream of this.streams.values())
            if (stream.gapTimer)
                clearTimeout(stream.gapTimer);
        const socket = this.socket;
        const closed = new RealtimeError("closed", "client closed");
        this.teardown(closed);
        for (const entry of this.outbox.values())
            entry.reject(closed);
        this.outbox.clear();
        if (socket) {
            try {
                socket.close(CLOSE_NORMAL);
            }
            catch {
                // already closing
            }
        }
        this.setState(STATES.CLOSED, { code: CLOSE_NORMAL });
    }
    teardown(reason) {
        this.stopHeartbeat();
        if (this.tokenTimer !== null)
            clearTimeout(this.tokenTimer);
        this.tokenTimer = null;
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
        if (socket !== this.socket)
            return;
        const url = this.url;
        this.lastClose = { code, reason };
        if (this.connection === null && (code === 1006 || code === 1015)) {
            if (!(socket instanceof EventStreamSocket)) {
                this.noteWebSocketFailure();
            }
            else if (this.transportMode === "auto") {
                // The stream got no further than the WebSocket: the network, not the upgrade, is
                // what fails. Take turns, so that whichever comes back first is used.
                this.transport = "websocket";
                this.wsFailures = 0;
            }
        }
        if (code === CLOSE_BAD_CURSOR) {
            // The server does not believe the cursor (another SECRET_KEY): start over, REST owes all.
            this.lastEventId = null;
        }
        this.teardown(new RealtimeError("connection_lost", `socket closed (${code})`));
        const refreshable = code === CLOSE_UNAUTHORIZED && this.refresher !== null;
        const final = code === CLOSE_FORBIDDEN || (code === CLOSE_UNAUTHORIZED && !refreshable);
        const willReconnect = this.wanted && !final;
        this.emit("disconnected", { code, reason, url, willReconnect });
        if (this.wanted && final) {
            this.signOut(code, reason);
            return;
        }
        if (!this.wanted) {
            this.setState(STATES.CLOSED, { code, reason });
            return;
        }
        if (refreshable) {
            // The token is bad (expired, revoked): ask for a fresh one before the next connect.
            this.tokenStale = true;
            this.scheduleReconnect(code, reason, "token_refresh");
            return;
        }
        if (code === CLOSE_SERVICE_RESTART) {
            this.scheduleReconnect(code, reason, "draining");
        }
        else if (code === CLOSE_TRY_AGAIN_LATER) {
            this.scheduleReconnect(code, reason, retryAfterMs(reason) === null ? "overloaded" : "retry_after");
        }
        else if (code === CLOSE_TOO_MANY) {
            this.scheduleReconnect(code, reason, "too_many");
        }
        else {
            this.scheduleReconnect(code, reason, "dropped");
        }
    }
    /** 4401 with no fresh token, or 4403: retrying cannot help, so stop. */
    signOut(code, reason) {
        this.wanted = false;
        this.stopProbe();
        if (this.reconnectTimer !== null)
            clearTimeout(this.reconnectTimer);
        this.reconnectTimer = null;
        const unauthorized = code !== CLOSE_FORBIDDEN;
        const err = new RealtimeError(unauthorized ? "unauthorized" : "forbidden", unauthorized ? "invalid or missing token" : "user_id does not match the token");
        err.closeCode = code;
        this.emit("error", err);
        // Queued messages stay queued: setToken() with a fresh token and connect() sends them.
        this.setState(STATES.CLOSED, { code, reason, signedOut: unauthorized });
    }
    /** The wait before the next connect, by what ended the last one. */
    reconnectDelay(cause, reason) {
        switch (cause) {
            case "draining":
                // A draining instance is healthy news: another instance is ready. The shortest step
                // of the backoff spreads a drained batch a little without making anyone wait.
                this.attempt = 0;
                return backoffDelay(0, this.backoff, this.random);
            case "retry_after":
                return hintedDelay(retryAfterMs(reason) ?? 0, this.maxRetryAfter, this.random);
            case "too_many":
                this.attempt = Math.max(this.attempt, TOO_MANY_ATTEMPT);
                return backoffDelay(this.attempt, this.backoff, this.random);
            default:
                return backoffDelay(this.attempt, this.backoff, this.random);
        }
    }
    scheduleReconnect(code, reason, cause) {
        this.socket = null;
        const delay = this.reconnectDelay(cause, reason);
        this.attempt += 1;
        // Round robin over the failover list: whatever failed, the next try goes elsewhere.
        this.urlIndex = (this.urlIndex + 1) % this.urls.length;
        const detail = { code, reason, delay, attempt: this.attempt };
        this.setState(STATES.RECONNECTING, detail);
        this.emit("reconnecting", { ...detail, cause, url: this.url });
        if (this.reconnectTimer !== null)
            clearTimeout(this.reconnectTimer);
        this.reconnectTimer = setTimeout(() => {
            this.reconnectTimer = null;
            if (this.wanted)
                this.connect();
        }, delay);
    }
    /** Drop the current socket as if the network had (and reconnect as after any drop). */
    dropSocket(code = 4000, reason = "dropped") {
        const socket = this.socket;
        if (!socket)
            return;
        this.handleClose(socket, code, reason);
        try {
            socket.close();
        }
        catch {
            // already gone
        }
    }
    handleFrame(socket, raw) {
        if (socket !== this.socket)
            return;
        this.lastFrameAt = Date.now();
        let frame;
        try {
            frame = JSON.parse(String(raw));
        }
        catch {
            return; // the server only sends JSON; anything else is noise
        }
        if (!frame || typeof frame !== "object")
            return;
        if (frame.event_id !== undefined && !this.seen.add(String(frame.event_id)))
            return;
        switch (frame.type) {
            case "connected": {
                const connected = frame;
                this.connection = connected;
                this.attempt = 0;
                if (connected.heartbeat_interval)
                    this.heartbeatInterval = Number(connected.heartbeat_interval);
                this.startHeartbeat();
                this.scheduleTokenRefresh();
                // The resume goes first, with the positions as they are: nothing a handler does in
                // answer to `connected` (a send, a track) can come between it and the socket's start.
                const resuming = this.transport === "sse" ? this.streamCatchUp() : this.resume();
                this.setState(STATES.OPEN, { instanceId: connected.instance_id });
                this.emit("connected", connected);
                if (!resuming)
                    this.flushOutbox(); // else once the resume is answered
                return;
            }
            case "pong":
                return;
            case "resync": {
                // Too far behind for the stream to replay: fetch this conversation by REST.
                const id = String(frame.conversation_id);
                if (this.streams.has(id)) {
                    this.catchUp.add(id);
                    void this.refetch(id);
                }
                return;
            }
            case "ack":
                this.settle(String(frame.ref), (entry) => entry.resolve(frame));
                return;
            case "error": {
                const error = frame;
                const err = new RealtimeError(error.code, error.message, error);
                if (error.ref !== undefined && this.pending.has(String(error.ref))) {
                    this.settle(String(error.ref), (entry) => entry.reject(err));
                }
                else {
                    this.emit("error", err);
                }
                return;
            }
            default: {
                const type = String(frame.type);
                if (DURABLE_TYPES.has(type) && frame.seq != null && frame.conversation_id != null) {
                    this.offer(frame);
                }
                else if (SERVER_EVENT_TYPES.has(type)) {
                    // No `seq` (typing, presence; or a durable type from a server without sequences):
                    // nothing to order, handed out as it comes.
                    this.emit(type, frame);
                }
            }
        }
    }
    /**
     * While the socket is open, swap its token (an `auth` frame) shortly before it expires, so
     * that the server's 4401 at expiry, and the reconnect after it, never happen. A refresh
     * that fails or yields nothing changes nothing here: the 4401 path decides then.
     */
    scheduleTokenRefresh() {
        if (this.tokenTimer !== null)
            clearTimeout(this.tokenTimer);
        this.tokenTimer = null;
        const refresher = this.refresher;
        const expiresAt = this.tokenExpiresAt;
        if (!refresher || expiresAt === null || !this.socket)
            return;
        const wait = expiresAt - this.refreshMargin - Date.now();
        const socket = this.socket;
        this.tokenTimer = setTimeout(() => {
            this.tokenTimer = null;
            if (this.socket !== socket)
                return;
            if (wait > MAX_TIMER_MS) {
                this.scheduleTokenRefresh();
                return;
            }
            void this.refreshOpenSocket(refresher, socket);
        }, Math.min(Math.max(0, wait), MAX_TIMER_MS));
    }
    async refreshOpenSocket(refresher, socket) {
        try {
            const grant = await refresher({ reason: "expiring" });
            const token = typeof grant === "string" ? grant : grant?.token;
            if (!token || this.socket !== socket)
                return;
            await this.setToken(typeof grant === "string" ? { token } : { token, expires_at: grant?.expires_at ?? null });
        }
        catch (err) {
            this.emit("error", err instanceof RealtimeError ? err : new RealtimeError("token_refresh_failed", String(err)));
        }
    }
    /* ---------- sequence tracking ---------- */
    follow(id, position) {
        const stream = new Stream(position);
        this.streams.set(id, stream);
        this.emit("subscribed", { conversation_id: id, seq: position });
        return stream;
    }
    /**
     * Declare that the app has every durable event of `conversationId` up to `seq` (from REST:
     * `last_seq` of the conversation it just loaded). Positions only move forward.
     */
    setPosition(conversationId, seq) {
        const id = String(conversationId);
        const value = Math.max(0, Number(seq) || 0);
        const stream = this.streams.get(id);
        if (!stream) {
            this.follow(id, value);
            return;
        }
        if (value <= stream.position)
            return;
        stream.position = value;
        for (const held of [...stream.held.keys()])
            if (held <= value)
                stream.held.delete(held);
        this.drain(id, stream);
    }
    /**
     * Follow `conversationId` from `seq` unless it is followed already. Use it for a conversation
     * list loaded by REST: a position the client has is never moved past events it has not yet
     * delivered (a resume may be replaying them at this very moment).
     */
    track(conversationId, seq) {
        if (!this.streams.has(String(conversationId)))
            this.setPosition(conversationId, seq);
    }
    /** Stop following a conversation (the user left it): no resume, no refetch for it. */
    forget(conversationId) {
        this.unfollow(String(conversationId), "forgotten");
    }
    unfollow(id, reason) {
        const stream = this.streams.get(id);
        if (!stream)
            return;
        if (stream.gapTimer)
            clearTimeout(stream.gapTimer);
        this.streams.delete(id);
        this.emit("unsubscribed", { conversation_id: id, reason });
    }
    /**
     * A durable event from the socket, a resume replay, a REST refetch or (with `own`) the
     * client's own ack: emitted once per `seq`, in `seq` order.
     */
    offer(frame, own = false) {
        const id = String(frame.conversation_id);
        const seq = Number(frame.seq);
        if (!Number.isInteger(seq) || seq < 1)
            return;
        // A conversation the app never told us about (one the user was just added to): its first
        // event we see is where we start from.
        const stream = this.streams.get(id) ?? this.follow(id, seq - 1);
        if (seq <= stream.position)
            return; // had it already
        const held = stream.held.get(seq);
        if (held) {
            // The event of our own message waits behind a gap and its ack has just settled the
            // outbox: once the gap fills it must not be handed out as someone else's message (the
            // app has it from sendMessage's promise).
            if (own)
                held.own = true;
            return;
        }
        stream.held.set(seq, { frame, own });
        this.drain(id, stream);
    }
    drain(id, stream) {
        for (;;) {
            const next = stream.position + 1;
            const held = stream.held.get(next);
            if (!held)
                break;
            stream.held.delete(next);
            stream.position = next;
            if (!held.own)
                this.deliver(held.frame);
            if (this.streams.get(id) !== stream)
                return; // forgotten by a handler or by deliver()
        }
        if (!stream.hasGap) {
            if (stream.gapTimer)
                clearTimeout(stream.gapTimer);
            stream.gapTimer = null;
        }
        else if (!stream.gapTimer && !stream.fetching) {
            // The server delivers in order on an open socket and heals its own gaps; waiting a
            // little first avoids a REST call for an event that is merely in flight.
            stream.gapTimer = setTimeout(() => {
                stream.gapTimer = null;
                if (this.streams.get(id) === stream && stream.hasGap && this.isOpen && !this.resuming) {
                    void this.refetch(id);
                }
            }, this.gapTimeout);
        }
    }
    deliver(frame) {
        if (frame.type === "message") {
            const message = frame.message ?? {};
            const entry = message.client_id != null ? this.outbox.get(String(message.client_id)) : undefined;
            if (entry && String(message.sender_id) === String(this.userId ?? message.sender_id)) {
                // Our own message, stored before its ack was lost: the resend is no longer needed,
                // and the app learns of it through sendMessage's promise, not as someone's message.
                this.settleOutbox(entry, message);
                return;
            }
        }
        this.emit(frame.type, frame);
        if (frame.type === "member" &&
            frame.action === "removed" &&
            this.userId != null &&
            String(frame.user_id) === String(this.userId)) {
            this.unfollow(String(frame.conversation_id), "removed"); // the last event of it for us
        }
    }
    /** A `seq` the server answered us with (an ack or a REST reply): ours, nothing to show. */
    noteOwn(conversationId, seq) {
        if (conversationId == null || seq == null)
            return;
        this.offer({ type: "own", conversation_id: String(conversationId), seq: Number(seq) }, true);
    }
    /**
     * Send `resume` for every followed conversation; the outbox goes once it is answered. False
     * when there is nothing to resume.
     */
    resume() {
        const positions = this.positions;
        const socket = this.socket;
        if (!Object.keys(positions).length)
            return false;
        const pending = this.sendFrame("resume", { positions });
        this.resuming = pending;
        pending.then((ack) => {
            if (this.socket !== socket)
                return;
            this.resuming = null;
            this.applyResume(ack.conversations ?? {});
            this.emit("resumed", { conversations: ack.conversations ?? {} });
            this.flushOutbox();
        }, (err) => {
            if (this.socket !== socket)
                return;
            this.resuming = null;
            // A server that cannot resume (or a timeout): catch up by REST instead.
            for (const id of this.streams.keys())
                void this.refetch(id);
            this.emit("error", err);
            this.flushOutbox();
        });
        return true;
    }
    /**
     * A stream opened with a `Last-Event-ID` replays by itself; one opened without (the first,
     * or after a refused cursor) starts at each conversation's latest `seq`, so REST fetches
     * what lies between. A fetch that failed is owed on every later stream connect.
     */
    streamCatchUp() {
        this.scheduleProbe();
        if (!this.cursorSent)
            for (const id of this.streams.keys())
                this.catchUp.add(id);
        for (const id of [...this.catchUp]) {
            if (this.streams.has(id))
                void this.refetch(id);
            else
                this.catchUp.delete(id);
        }
        return false;
    }
    applyResume(conversations) {
        for (const [id, answer] of Object.entries(conversations)) {
            const stream = this.streams.get(String(id));
            if (!stream)
                continue;
            if (answer.recovered && (answer.seq == null || stream.position >= answer.seq) && !stream.hasGap) {
                this.emit("recovery", { conversation_id: id, status: "recovered", seq: stream.position, source: "resume" });
                continue;
            }
            if (!answer.recovered && answer.seq == null) {
                // Not (or no longer) a participant: nothing to catch up with.
                this.unfollow(id, "not_participant");
                this.emit("reset", { conversation_id: String(id), reason: "not_participant", seq: null });
                continue;
            }
            void this.refetch(String(id), answer.seq);
        }
    }
    /**
     * Catch a conversation up by REST (`GET /api/conversations/{id}/events?after_seq=N`), page
     * after page; past `refetchLimit` events (or when the user no longer takes part) the app is
     * told to reload it with a `reset` event instead.
     */
    async refetch(id, latest = null) {
        const stream = this.streams.get(id);
        if (!stream || stream.fetching)
            return;
        if (latest != null && latest - stream.position > this.refetchLimit) {
            this.resetStream(id, stream, latest, "too_far_behind");
            return;
        }
        stream.fetching = true;
        if (stream.gapTimer)
            clearTimeout(stream.gapTimer);
        stream.gapTimer = null;
        this.emit("recovery", { conversation_id: id, status: "refetching", seq: latest, source: "rest" });
        let fetched = 0;
        try {
            for (;;) {
                const from = stream.position;
                const page = (await this.request("GET", `/api/conversations/${encodeURIComponent(id)}/events?after_seq=${from}`));
                if (this.streams.get(id) !== stream)
                    return;
                const events = page?.events ?? [];
                for (const frame of events) {
                    if (frame.event_id !== undefined)
                        this.seen.add(String(frame.event_id));
                    this.offer(frame);
                    if (this.streams.get(id) !== stream)
                        return;
                }
                fetched += events.length;
                const last = Number(page?.last_seq ?? from);
                if (stream.position >= last || !events.length)
                    break;
                if (fetched >= this.refetchLimit) {
                    this.resetStream(id, stream, last, "too_far_behind");
                    return;
                }
            }
        }
        catch (err) {
            const status = err.status;
            if (status === 403 || status === 404) {
                this.unfollow(id, "not_participant");
                this.emit("reset", { conversation_id: id, reason: "not_participant", seq: null });
                return;
            }
            // Offline again, or the server failed: the next resume (or gap timer) tries again.
            this.emit("recovery", { conversation_id: id, status: "failed", seq: stream.position, source: "rest" });
            return;
        }
        finally {
            stream.fetching = false;
        }
        if (this.streams.get(id) === stream) {
            this.catchUp.delete(id);
            this.emit("recovery", { conversation_id: id, status: "caught_up", seq: stream.position, source: "rest" });
            this.drain(id, stream);
        }
    }
    resetStream(id, stream, seq, reason) {
        this.catchUp.delete(id);
        stream.position = Math.max(stream.position, Number(seq));
        for (const held of [...stream.held.keys()])
            if (held <= stream.position)
                stream.held.delete(held);
        this.emit("reset", { conversation_id: id, reason, seq: stream.position });
        this.drain(id, stream);
    }
    settle(ref, fn) {
        const entry = this.pending.get(ref);
        if (!entry)
            return;
        this.pending.delete(ref);
        clearTimeout(entry.timer);
        fn(entry);
    }
    startHeartbeat() {
        this.stopHeartbeat();
        const intervalMs = Math.max(100, this.heartbeatInterval * 1000);
        this.heartbeatTimer = setInterval(() => {
            const socket = this.socket;
            if (!socket)
                return;
            // Two silent intervals (not even a pong) mean a half-open TCP connection: drop it.
            if (Date.now() - this.lastFrameAt > 2 * intervalMs + 1000) {
                this.handleClose(socket, 4000, "heartbeat timeout");
                try {
                    socket.close();
                }
                catch {
                    // already gone
                }
                return;
            }
            this.rawSend({ type: "ping" });
        }, intervalMs);
    }
    stopHeartbeat() {
        if (this.heartbeatTimer !== null)
            clearInterval(this.heartbeatTimer);
        this.heartbeatTimer = null;
    }
    rawSend(frame) {
        try {
            if (!this.socket)
                return false;
            this.socket.send(JSON.stringify(frame));
            return true;
        }
        catch {
            return false;
        }
    }
    /* ---------- sending ---------- */
    /**
     * Send a client frame; resolves with the `ack` frame, rejects with a RealtimeError built
     * from the `error` frame with the same `ref`. While the socket is down, typing/read/status/
     * message go through their REST twins (the result carries `via: "rest"`).
     */
    send(type, payload) {
        const fields = (payload ?? {});
        if (!this.isOpen || !this.socket || this.transport === "sse") {
            // On the stream, REST is the only way to write.
            if ((this.restFallback || this.transport === "sse") && REST_TWINS[type])
                return this.sendRest(type, fields);
            return Promise.reject(new RealtimeError("not_connected", `socket is ${this.state}`));
        }
        return this.sendFrame(type, fields).then((ack) => {
            if (type === "read" && ack.seq != null)
                this.noteOwn(fields.conversation_id, ack.seq);
            return ack;
        });
    }
    /** `send` over the socket only (no REST twin). */
    sendFrame(type, payload) {
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
    async sendRest(type, payload) {
        const twin = REST_TWINS[type];
        const body = await this.request("POST", twin.path(payload), twin.body(payload));
        const seq = asRecord(body).seq;
        if (type === "read" && seq != null)
            this.noteOwn(payload.conversation_id, seq);
        return { type: "ack", ref: "", via: "rest", ...twin.result(body) };
    }
    /** An authenticated REST call; resolves with the JSON body, rejects with a RealtimeError. */
    async request(method, path, body) {
        const headers = {
            Authorization: `Token ${this.token ?? ""}`,
            Accept: "application/json",
        };
        const init = { method, headers };
        if (body !== undefined) {
            headers["Content-Type"] = "application/json";
            init.body = JSON.stringify(body);
        }
        if (!this.fetchImpl)
            throw new RealtimeError("network_error", "no fetch implementation");
        let response;
        try {
            response = await this.fetchImpl(`${this.apiBase}${path}`, init);
        }
        catch (err) {
            throw new RealtimeError("network_error", String(err));
        }
        const text = await response.text();
        let data = null;
        try {
            data = text ? JSON.parse(text) : null;
        }
        catch {
            data = { detail: text };
        }
        if (!response.ok) {
            const detail = asRecord(data).detail;
            const err = new RealtimeError(`http_${response.status}`, typeof detail === "string" ? detail : response.statusText, asRecord(data));
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
     * Send a message; resolves with the stored message once the server has it, however many
     * reconnects that takes. It waits in the outbox under its `client_id` (generated unless
     * given) and is sent again after every reconnect until acknowledged; the server stores it
     * once. Rejects only when the server refuses it (`invalid_payload`, `not_participant`,
     * `http_400`, ...) or on close().
     */
    sendMessage(conversationId, body, options = {}) {
        const clientId = options.clientId || newClientId(this.random);
        const existing = this.outbox.get(clientId);
        if (existing)
            return existing.promise;
        let resolve;
        let reject;
        const promise = new Promise((res, rej) => {
            resolve = res;
            reject = rej;
        });
        const entry = {
            conversation_id: String(conversationId),
            body,
            client_id: clientId,
            inFlight: false,
            promise,
            resolve,
            reject,
        };
        this.outbox.set(clientId, entry);
        this.sendEntry(entry);
        return promise;
    }
    /** Send every queued message that is not on its way already. */
    flushOutbox() {
        if (this.outboxTimer !== null)
            clearTimeout(this.outboxTimer);
        this.outboxTimer = null;
        for (const entry of [...this.outbox.values()])
            this.sendEntry(entry);
    }
    sendEntry(entry) {
        if (entry.inFlight || !this.outbox.has(entry.client_id))
            return;
        // While a resume is under way its replay may already hold this message: wait for the ack.
        if (this.resuming)
            return;
        const payload = { conversation_id: entry.conversation_id, body: entry.body, client_id: entry.client_id };
        let attempt;
        if (this.isOpen && this.socket && this.transport === "websocket") {
            attempt = this.sendFrame("message", payload).then((ack) => ack.message);
        }
        else if ((this.restFallback || this.transport === "sse") && this.fetchImpl) {
            const twin = REST_TWINS.message;
            attempt = this.request("POST", twin.path(payload), twin.body(payload));
        }
        else {
            return; // sent when the socket opens
        }
        entry.inFlight = true;
        attempt.then((message) => {
            entry.inFlight = false;
            this.outboxAttempt = 0;
            this.settleOutbox(entry, message);
        }, (err) => {
            entry.inFlight = false;
            if (!this.outbox.has(entry.client_id))
                return;
            const status = err.status ?? 0;
            if (RETRYABLE_SEND_CODES.has(err.code) || status === 429 || status >= 500) {
                this.retryOutboxLater();
                return;
            }
            this.outbox.delete(entry.client_id);
            entry.reject(err);
        });
    }
    retryOutboxLater() {
        // A socket that opens flushes at once; this covers the REST path (socket blocked, server
        // briefly failing) and an ack that never came on a socket that stays open.
        if (this.outboxTimer !== null || !this.wanted)
            return;
        const delay = backoffDelay(this.outboxAttempt++, this.backoff, this.random);
        this.outboxTimer = setTimeout(() => {
            this.outboxTimer = null;
            this.flushOutbox();
        }, delay);
    }
    settleOutbox(entry, message) {
        if (!this.outbox.has(entry.client_id))
            return;
        this.outbox.delete(entry.client_id);
        if (message && message.seq != null) {
            this.noteOwn(message.conversation_id ?? entry.conversation_id, message.seq);
        }
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
        const grant = typeof token === "string" ? { token } : token;
        if (!grant.token)
            throw new Error("setToken needs a token");
        const adopt = (expiresAt) => {
            this.token = grant.token;
            this.tokenStale = false;
            this.tokenExpiresAt = expiryMs(expiresAt);
        };
        if (!this.isOpen || !this.socket || this.transport === "sse") {
            // A stream keeps the token it opened with; the next connect (and REST) uses this one.
            adopt(grant.expires_at);
            return Promise.resolve(null);
        }
        return this.sendFrame("auth", { token: grant.token }).then((ack) => {
            adopt(ack.expires_at ?? grant.expires_at);
            this.scheduleTokenRefresh();
            return ack;
        });
    }
}
export default RealtimeClient;
