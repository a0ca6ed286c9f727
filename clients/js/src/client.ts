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

import {
  backoffDelay,
  DEFAULT_BACKOFF,
  hintedDelay,
  retryAfterMs,
  type BackoffOptions,
  type Random,
} from "./backoff.js";
import {
  EVENT_TYPES,
  STATES,
  type ClientEventMap,
  type ClientEventType,
  type ConnectionState,
  type Handler,
  type ReconnectCause,
  type StateChange,
  type UnsubscribedEvent,
} from "./events.js";
import {
  CLOSE_FORBIDDEN,
  CLOSE_NORMAL,
  CLOSE_SERVICE_RESTART,
  CLOSE_TOO_MANY,
  CLOSE_TRY_AGAIN_LATER,
  CLOSE_UNAUTHORIZED,
  type AckFrame,
  type ClientFrameType,
  type ClientPayload,
  type ConnectedEvent,
  type DurableEvent,
  type DurableType,
  type ErrorFrame,
  type EventsPage,
  type Id,
  type Message,
  type ResumeAnswer,
  type ServerEvent,
  type TokenGrant,
  type Transport,
  type UserStatus,
} from "./protocol.js";
import { CLOSE_BAD_CURSOR, EventStreamSocket, streamUrl } from "./stream.js";
import { BoundedSet, newClientId, RealtimeError } from "./util.js";

export * from "./backoff.js";
export * from "./events.js";
export * from "./protocol.js";
export * from "./stream.js";
export * from "./util.js";

/** Events that carry their conversation's `seq`; the others (typing, presence) carry none. */
export const DURABLE_TYPES: ReadonlySet<string> = new Set<DurableType>(["message", "read", "member"]);

const SERVER_EVENT_TYPES: ReadonlySet<string> = new Set<ServerEvent["type"]>([
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

/** The socket the client drives: the browser's WebSocket, or `ws` in Node. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: BivariantHandler<{ data: unknown }> | null;
  onclose: BivariantHandler<{ code: number; reason: string }> | null;
  onerror: BivariantHandler<unknown> | null;
}
// Method syntax keeps parameters bivariant, so a constructor whose handlers take a richer event
// type (the DOM's, or the `ws` package's) is accepted as it is.
type BivariantHandler<E> = { bivarianceHack(event: E): void }["bivarianceHack"];
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

/** Why the token-refresh callback is called. */
export interface TokenRefreshContext {
  /** `unauthorized`: the server closed with 4401; `expiring`: the known expiry is near. */
  reason: "unauthorized" | "expiring";
  /** The close code that caused it (4401), if any. */
  code?: number;
}

/**
 * Called for a fresh token (log in again, or ask the app's backend). Answer the token, or the
 * body of `POST /api/auth/token` (`{token, expires_at}`); `null`/`undefined` means "signed
 * out": the client stops reconnecting. A throw is taken as a passing failure and retried with
 * the backoff.
 */
export type TokenRefresher = (
  context: TokenRefreshContext,
) => Promise<TokenGrant | string | null | undefined> | TokenGrant | string | null | undefined;

export interface RealtimeClientOptions {
  /** API token (`POST /api/auth/token`); may be left out when `refreshToken` can supply one. */
  token?: string;
  /** When `token` expires (`expires_at` of the token answer), to refresh it before a connect. */
  tokenExpiresAt?: string | number | Date | null;
  /** Called on 4401, and before a connect whose token expires within `tokenRefreshMargin`. */
  refreshToken?: TokenRefresher;
  /** Milliseconds before the expiry at which a token counts as expiring (default 60 s). */
  tokenRefreshMargin?: number;
  /**
   * The socket URL, or a failover list of them (tried round robin on failure). Default: `/ws/`
   * on the page's host.
   */
  url?: string | readonly string[];
  /** Prefix of REST calls. Default: the origin of the URL the socket currently uses. */
  apiBase?: string;
  /** Seconds between pings until the server's `connected` frame says. */
  heartbeatInterval?: number;
  /** Reconnect backoff in milliseconds (full jitter); default `{500, 30000, 2}`. */
  backoff?: Partial<BackoffOptions>;
  /** The longest `retry_after_ms` hint honoured, in milliseconds (default 5 minutes). */
  maxRetryAfter?: number;
  /** Milliseconds before an unanswered `send` rejects. */
  ackTimeout?: number;
  /** How many recent event ids to remember. */
  dedupSize?: number;
  /** Use REST for typing/read/status/message while the socket is down (default true). */
  restFallback?: boolean;
  /** Connect in the constructor (default true). */
  autoConnect?: boolean;
  /** `{conversationId: seq}` the app already has. */
  positions?: Record<Id, number>;
  /** Milliseconds an event ahead of a gap waits before the missing ones are fetched by REST. */
  gapTimeout?: number;
  /** Most events fetched by REST to catch one conversation up; past it: a `reset` event. */
  refetchLimit?: number;
  /** Drop the socket on the browser's `offline` event, reconnect on `online` (default true). */
  watchNetwork?: boolean;
  /**
   * `auto` (default): a WebSocket, and server-sent events (with REST writes) after
   * `fallbackAttempts` WebSocket opens in a row failed on every URL; `sse`: the stream only;
   * `websocket`: never the stream.
   */
  transport?: "auto" | Transport;
  /** WebSocket opens that must fail in a row on each URL before `auto` falls back (default 2). */
  fallbackAttempts?: number;
  /** The stream cursor kept from an earlier page (`client.lastEventId`), to resume with. */
  lastEventId?: string | null;
  /** Milliseconds on the stream before the WebSocket is tried again (default 5 minutes). */
  websocketRetryInterval?: number;
  /** A WebSocket constructor (Node has none before version 22: pass the `ws` package's). */
  WebSocket?: WebSocketConstructor;
  fetch?: FetchLike;
  random?: Random;
}

interface Held {
  frame: DurableEvent | OwnMarker;
  own: boolean;
}

/** A `seq` the client itself caused (its message's or read receipt's ack): nothing to show. */
interface OwnMarker {
  type: "own";
  conversation_id: Id;
  seq: number;
}

/**
 * One conversation's delivery state: `position` is the highest `seq` up to which the client has
 * every durable event; `held` keeps events that arrived ahead of a gap until it is filled.
 */
class Stream {
  position: number;
  readonly held = new Map<number, Held>();
  gapTimer: ReturnType<typeof setTimeout> | null = null;
  fetching = false;

  constructor(position: number) {
    this.position = position;
  }

  get hasGap(): boolean {
    return this.held.size > 0;
  }
}

interface OutboxEntry {
  conversation_id: Id;
  body: string;
  client_id: string;
  inFlight: boolean;
  promise: Promise<Message>;
  resolve: (message: Message) => void;
  reject: (err: RealtimeError) => void;
}

interface PendingReply {
  resolve: (ack: AckFrame) => void;
  reject: (err: RealtimeError) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** A send's result: the ack frame, or the REST twin's body shaped like one (`via: "rest"`). */
export type SendResult = AckFrame;

function defaultSocketUrl(): string {
  const loc = (globalThis as { location?: Location }).location;
  if (!loc) throw new Error("RealtimeClient needs `url` outside a browser page");
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws/`;
}

/** `ws://host:port/ws/` -> `http://host:port`: REST goes to the instance the socket uses. */
function httpOrigin(socketUrl: string): string {
  try {
    const url = new URL(socketUrl);
    const scheme = url.protocol === "wss:" ? "https:" : url.protocol === "ws:" ? "http:" : url.protocol;
    return `${scheme}//${url.host}`;
  } catch {
    return "";
  }
}

function expiryMs(value: string | number | Date | null | undefined): number | null {
  if (value == null) return null;
  const ms = value instanceof Date ? value.getTime() : typeof value === "number" ? value : Date.parse(value);
  return Number.isFinite(ms) ? ms : null;
}

type RestTwin = {
  path: (p: Record<string, unknown>) => string;
  body: (p: Record<string, unknown>) => Record<string, unknown>;
  result: (body: unknown) => Record<string, unknown>;
};

const asRecord = (body: unknown): Record<string, unknown> =>
  body && typeof body === "object" ? (body as Record<string, unknown>) : {};

const REST_TWINS: Partial<Record<ClientFrameType, RestTwin>> = {
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
  token: string | null;
  /** The failover list; `url` is the one in use. */
  readonly urls: readonly string[];
  heartbeatInterval: number;
  readonly backoff: BackoffOptions;
  readonly ackTimeout: number;
  readonly restFallback: boolean;
  readonly gapTimeout: number;
  readonly refetchLimit: number;
  readonly seen: BoundedSet<string>;
  /** What carries events now: `websocket`, or `sse` (then writes go through REST). */
  transport: Transport;
  /** The last `id:` of the stream: its `Last-Event-ID` on the next stream connect. */
  lastEventId: string | null = null;
  readonly transportMode: "auto" | Transport;
  readonly fallbackAttempts: number;
  readonly websocketRetryInterval: number;

  state: ConnectionState = STATES.CLOSED;
  /** The `connected` frame of the current socket. */
  connection: ConnectedEvent | null = null;
  /** `{code, reason}` of the last socket that closed. */
  lastClose: { code: number; reason: string } | null = null;
  /** The pending resume, between `connected` and its ack. */
  resuming: Promise<AckFrame> | null = null;

  private readonly explicitApiBase: string | null;
  private readonly WebSocketImpl: WebSocketConstructor | undefined;
  private readonly fetchImpl: FetchLike | undefined;
  private readonly random: Random;
  private readonly refresher: TokenRefresher | null;
  private readonly refreshMargin: number;
  private readonly maxRetryAfter: number;
  private tokenExpiresAt: number | null;
  private tokenStale = false;
  private urlIndex = 0;
  private socket: WebSocketLike | null = null;
  private opening = false;
  private attempt = 0;
  private readonly handlers = new Map<ClientEventType, Set<(event: never) => void>>();
  private readonly pending = new Map<string, PendingReply>();
  private refCounter = 0;
  private heartbeatTimer: ReturnType<typeof setInterval> | null = null;
  private tokenTimer: ReturnType<typeof setTimeout> | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private lastFrameAt = 0;
  private wanted = false; // true between connect() and close()
  private wsFailures = 0; // WebSocket opens in a row that ended before `connected`
  private cursorSent = false; // the current stream was opened with a Last-Event-ID
  private readonly catchUp = new Set<Id>(); // conversations a stream cannot replay: REST owes them
  private probeTimer: ReturnType<typeof setTimeout> | null = null;
  private probe: WebSocketLike | null = null;
  private readonly streams = new Map<Id, Stream>();
  private readonly outbox = new Map<string, OutboxEntry>();
  private outboxTimer: ReturnType<typeof setTimeout> | null = null;
  private outboxAttempt = 0;
  private readonly watchNetwork: boolean;
  private listening = false;
  private readonly onOffline = (): void => this.dropSocket(4000, "browser offline");
  private readonly onOnline = (): void => {
    // Back online: the backoff was waiting out a network that is now there.
    if (this.wanted && !this.socket && !this.opening) {
      this.attempt = 0;
      this.connect();
    }
  };

  constructor(options: RealtimeClientOptions = {}) {
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
      options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
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
    for (const [id, seq] of Object.entries(options.positions ?? {})) this.setPosition(id, seq);
    this.watchNetwork =
      (options.watchNetwork ?? true) && typeof globalThis.addEventListener === "function";
    if (options.autoConnect ?? true) this.connect();
  }

  /** The socket URL in use (or tried next). */
  get url(): string {
    return this.urls[this.urlIndex] as string;
  }

  /** Prefix of REST calls: the explicit `apiBase`, else the origin of the socket URL in use. */
  get apiBase(): string {
    return this.explicitApiBase ?? httpOrigin(this.url);
  }

  /** The last contiguous `seq` per followed conversation, as sent in `resume`. */
  get positions(): Record<Id, number> {
    const out: Record<Id, number> = {};
    for (const [id, stream] of this.streams) out[id] = stream.position;
    return out;
  }

  /** How many messages wait for the server to store them. */
  get pendingMessages(): number {
    return this.outbox.size;
  }

  get instanceId(): string | null {
    return this.connection ? this.connection.instance_id : null;
  }

  get userId(): Id | null {
    return this.connection ? this.connection.user_id : null;
  }

  get connectionId(): string | null {
    return this.connection ? this.connection.connection_id : null;
  }

  get isOpen(): boolean {
    return this.state === STATES.OPEN;
  }

  /** Subscribe to an event type; returns a function that unsubscribes. */
  on<K extends ClientEventType>(type: K, handler: Handler<K>): () => void {
    if (!EVENT_TYPES.has(type)) throw new Error(`unknown event type: ${String(type)}`);
    let set = this.handlers.get(type);
    if (!set) {
      set = new Set();
      this.handlers.set(type, set);
    }
    set.add(handler as (event: never) => void);
    return () => this.off(type, handler);
  }

  off<K extends ClientEventType>(type: K, handler: Handler<K>): void {
    this.handlers.get(type)?.delete(handler as (event: never) => void);
  }

  private emit<K extends ClientEventType>(type: K, data: ClientEventMap[K]): void {
    for (const handler of [...(this.handlers.get(type) ?? [])]) {
      try {
        (handler as Handler<K>)(data);
      } catch (err) {
        // One broken handler must not starve the others (nor kill the socket's read loop).
        console.error(`RealtimeClient ${type} handler failed`, err);
      }
    }
  }

  private setState(next: ConnectionState, detail: Omit<StateChange, "state" | "previous"> = {}): void {
    if (this.state === next) return;
    const previous = this.state;
    this.state = next;
    this.emit("state", { state: next, previous, transport: this.transport, ...detail });
  }

  /* ---------- the connection ---------- */

  /** Open the socket (a no-op while one is open or opening). */
  connect(): void {
    this.wanted = true;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.watchNetwork && !this.listening) {
      globalThis.addEventListener("offline", this.onOffline);
      globalThis.addEventListener("online", this.onOnline);
      this.listening = true;
    }
    if (this.socket || this.opening) return;
    if (this.state !== STATES.RECONNECTING) this.setState(STATES.CONNECTING);
    if (this.needsFreshToken()) {
      void this.refreshThenOpen();
      return;
    }
    this.open();
  }

  private needsFreshToken(): boolean {
    if (!this.refresher) return false;
    if (this.tokenStale || !this.token) return true;
    return this.tokenExpiresAt !== null && Date.now() + this.refreshMargin >= this.tokenExpiresAt;
  }

  private async refreshThenOpen(): Promise<void> {
    this.opening = true;
    const code = this.tokenStale ? (this.lastClose?.code ?? CLOSE_UNAUTHORIZED) : undefined;
    let grant: TokenGrant | string | null | undefined;
    try {
      grant = await (this.refresher as TokenRefresher)(
        this.tokenStale || !this.token ? { reason: "unauthorized", code } : { reason: "expiring" },
      );
    } catch (err) {
      this.opening = false;
      if (!this.wanted) return;
      // The app's backend could not answer now: not a sign-out, try again after a backoff.
      this.emit("error", new RealtimeError("token_refresh_failed", String(err)));
      this.scheduleReconnect(code ?? 1006, "token refresh failed", "dropped");
      return;
    }
    this.opening = false;
    if (!this.wanted) return;
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

  private open(): void {
    if (this.transport === "sse") {
      this.openStream();
      return;
    }
    const WebSocketImpl = this.WebSocketImpl;
    const url = this.url;
    this.emit("connecting", { url, attempt: this.attempt });
    const sep = url.includes("?") ? "&" : "?";
    let socket: WebSocketLike;
    try {
      if (!WebSocketImpl) throw new Error("no WebSocket constructor (pass the `WebSocket` option)");
      socket = new WebSocketImpl(`${url}${sep}token=${encodeURIComponent(this.token ?? "")}`);
    } catch (err) {
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
    socket.onerror = () => {};
  }

  /** Open the stream (`GET /api/events/stream`) with the last cursor, if any. */
  private openStream(): void {
    const url = streamUrl(this.apiBase);
    this.emit("connecting", { url, attempt: this.attempt });
    if (!this.fetchImpl) {
      this.emit("disconnected", { code: 1006, reason: "no fetch", url, willReconnect: true });
      this.scheduleReconnect(1006, "no fetch implementation", "dropped");
      return;
    }
    this.cursorSent = this.lastEventId !== null;
    const socket: WebSocketLike = new EventStreamSocket({
      fetch: this.fetchImpl,
      url,
      token: this.token ?? "",
      lastEventId: this.lastEventId,
      onEventId: (id) => {
        if (this.socket === socket) this.lastEventId = id;
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
  private noteWebSocketFailure(): void {
    if (this.transportMode !== "auto" || this.transport !== "websocket") return;
    // Offline, every connect fails: that says nothing about WebSockets.
    if ((globalThis as { navigator?: { onLine?: boolean } }).navigator?.onLine === false) return;
    this.wsFailures += 1;
    if (this.wsFailures < this.fallbackAttempts * this.urls.length) return;
    this.wsFailures = 0;
    this.transport = "sse";
    // The stream starts without a cursor: what the WebSocket had is caught up by REST.
    this.lastEventId = null;
  }

  /** On the stream for a while: open a WebSocket on the side; if it connects, move back. */
  private scheduleProbe(): void {
    if (this.probeTimer !== null || this.transportMode !== "auto" || this.transport !== "sse") return;
    this.probeTimer = setTimeout(() => {
      this.probeTimer = null;
      this.probeWebSocket();
    }, this.websocketRetryInterval);
  }

  private probeWebSocket(): void {
    if (!this.wanted || this.transport !== "sse" || this.probe || !this.WebSocketImpl) return;
    const sep = this.url.includes("?") ? "&" : "?";
    let probe: WebSocketLike;
    try {
      probe = new this.WebSocketImpl(`${this.url}${sep}token=${encodeURIComponent(this.token ?? "")}`);
    } catch {
      this.scheduleProbe();
      return;
    }
    this.probe = probe;
    const done = (): void => {
      probe.onmessage = probe.onclose = probe.onerror = null;
      if (this.probe === probe) this.probe = null;
    };
    probe.onerror = () => {};
    probe.onclose = () => {
      done();
      this.scheduleProbe();
    };
    probe.onmessage = (ev) => {
      let type: unknown;
      try {
        type = (JSON.parse(String(ev.data)) as { type?: unknown }).type;
      } catch {
        type = null;
      }
      done();
      try {
        probe.close(CLOSE_NORMAL);
      } catch {
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

  private stopProbe(): void {
    if (this.probeTimer !== null) clearTimeout(this.probeTimer);
    this.probeTimer = null;
    const probe = this.probe;
    this.probe = null;
    if (probe) {
      probe.onmessage = probe.onclose = probe.onerror = null;
      try {
        probe.close(CLOSE_NORMAL);
      } catch {
        // already closing
      }
    }
  }

  /** Close for good: no reconnection until connect() is called again. */
  close(): void {
    this.wanted = false;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.outboxTimer !== null) clearTimeout(this.outboxTimer);
    this.outboxTimer = null;
    this.stopProbe();
    if (this.listening) {
      globalThis.removeEventListener("offline", this.onOffline);
      globalThis.removeEventListener("online", this.onOnline);
      this.listening = false;
    }
    for (const stream of this.streams.values()) if (stream.gapTimer) clearTimeout(stream.gapTimer);
    const socket = this.socket;
    const closed = new RealtimeError("closed", "client closed");
    this.teardown(closed);
    for (const entry of this.outbox.values()) entry.reject(closed);
    this.outbox.clear();
    if (socket) {
      try {
        socket.close(CLOSE_NORMAL);
      } catch {
        // already closing
      }
    }
    this.setState(STATES.CLOSED, { code: CLOSE_NORMAL });
  }

  private teardown(reason: RealtimeError): void {
    this.stopHeartbeat();
    if (this.tokenTimer !== null) clearTimeout(this.tokenTimer);
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

  private handleClose(socket: WebSocketLike, code: number, reason: string): void {
    if (socket !== this.socket) return;
    const url = this.url;
    this.lastClose = { code, reason };
    if (this.connection === null && (code === 1006 || code === 1015)) {
      if (!(socket instanceof EventStreamSocket)) {
        this.noteWebSocketFailure();
      } else if (this.transportMode === "auto") {
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
    } else if (code === CLOSE_TRY_AGAIN_LATER) {
      this.scheduleReconnect(code, reason, retryAfterMs(reason) === null ? "overloaded" : "retry_after");
    } else if (code === CLOSE_TOO_MANY) {
      this.scheduleReconnect(code, reason, "too_many");
    } else {
      this.scheduleReconnect(code, reason, "dropped");
    }
  }

  /** 4401 with no fresh token, or 4403: retrying cannot help, so stop. */
  private signOut(code: number, reason: string): void {
    this.wanted = false;
    this.stopProbe();
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const unauthorized = code !== CLOSE_FORBIDDEN;
    const err = new RealtimeError(
      unauthorized ? "unauthorized" : "forbidden",
      unauthorized ? "invalid or missing token" : "user_id does not match the token",
    );
    err.closeCode = code;
    this.emit("error", err);
    // Queued messages stay queued: setToken() with a fresh token and connect() sends them.
    this.setState(STATES.CLOSED, { code, reason, signedOut: unauthorized });
  }

  /** The wait before the next connect, by what ended the last one. */
  private reconnectDelay(cause: ReconnectCause, reason: string): number {
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

  private scheduleReconnect(code: number, reason: string, cause: ReconnectCause): void {
    this.socket = null;
    const delay = this.reconnectDelay(cause, reason);
    this.attempt += 1;
    // Round robin over the failover list: whatever failed, the next try goes elsewhere.
    this.urlIndex = (this.urlIndex + 1) % this.urls.length;
    const detail = { code, reason, delay, attempt: this.attempt };
    this.setState(STATES.RECONNECTING, detail);
    this.emit("reconnecting", { ...detail, cause, url: this.url });
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.wanted) this.connect();
    }, delay);
  }

  /** Drop the current socket as if the network had (and reconnect as after any drop). */
  dropSocket(code = 4000, reason = "dropped"): void {
    const socket = this.socket;
    if (!socket) return;
    this.handleClose(socket, code, reason);
    try {
      socket.close();
    } catch {
      // already gone
    }
  }

  private handleFrame(socket: WebSocketLike, raw: unknown): void {
    if (socket !== this.socket) return;
    this.lastFrameAt = Date.now();
    let frame: Record<string, unknown>;
    try {
      frame = JSON.parse(String(raw)) as Record<string, unknown>;
    } catch {
      return; // the server only sends JSON; anything else is noise
    }
    if (!frame || typeof frame !== "object") return;
    if (frame.event_id !== undefined && !this.seen.add(String(frame.event_id))) return;

    switch (frame.type) {
      case "connected": {
        const connected = frame as unknown as ConnectedEvent;
        this.connection = connected;
        this.attempt = 0;
        if (connected.heartbeat_interval) this.heartbeatInterval = Number(connected.heartbeat_interval);
        this.startHeartbeat();
        this.scheduleTokenRefresh();
        // The resume goes first, with the positions as they are: nothing a handler does in
        // answer to `connected` (a send, a track) can come between it and the socket's start.
        const resuming = this.transport === "sse" ? this.streamCatchUp() : this.resume();
        this.setState(STATES.OPEN, { instanceId: connected.instance_id });
        this.emit("connected", connected);
        if (!resuming) this.flushOutbox(); // else once the resume is answered
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
        this.settle(String(frame.ref), (entry) => entry.resolve(frame as AckFrame));
        return;
      case "error": {
        const error = frame as unknown as ErrorFrame;
        const err = new RealtimeError(error.code, error.message, error);
        if (error.ref !== undefined && this.pending.has(String(error.ref))) {
          this.settle(String(error.ref), (entry) => entry.reject(err));
        } else {
          this.emit("error", err);
        }
        return;
      }
      default: {
        const type = String(frame.type);
        if (DURABLE_TYPES.has(type) && frame.seq != null && frame.conversation_id != null) {
          this.offer(frame as unknown as DurableEvent);
        } else if (SERVER_EVENT_TYPES.has(type)) {
          // No `seq` (typing, presence; or a durable type from a server without sequences):
          // nothing to order, handed out as it comes.
          this.emit(type as ServerEvent["type"], frame as never);
        }
      }
    }
  }

  /**
   * While the socket is open, swap its token (an `auth` frame) shortly before it expires, so
   * that the server's 4401 at expiry, and the reconnect after it, never happen. A refresh
   * that fails or yields nothing changes nothing here: the 4401 path decides then.
   */
  private scheduleTokenRefresh(): void {
    if (this.tokenTimer !== null) clearTimeout(this.tokenTimer);
    this.tokenTimer = null;
    const refresher = this.refresher;
    const expiresAt = this.tokenExpiresAt;
    if (!refresher || expiresAt === null || !this.socket) return;
    const wait = expiresAt - this.refreshMargin - Date.now();
    const socket = this.socket;
    this.tokenTimer = setTimeout(
      () => {
        this.tokenTimer = null;
        if (this.socket !== socket) return;
        if (wait > MAX_TIMER_MS) {
          this.scheduleTokenRefresh();
          return;
        }
        void this.refreshOpenSocket(refresher, socket);
      },
      Math.min(Math.max(0, wait), MAX_TIMER_MS),
    );
  }

  private async refreshOpenSocket(refresher: TokenRefresher, socket: WebSocketLike): Promise<void> {
    try {
      const grant = await refresher({ reason: "expiring" });
      const token = typeof grant === "string" ? grant : grant?.token;
      if (!token || this.socket !== socket) return;
      await this.setToken(typeof grant === "string" ? { token } : { token, expires_at: grant?.expires_at ?? null });
    } catch (err) {
      this.emit("error", err instanceof RealtimeError ? err : new RealtimeError("token_refresh_failed", String(err)));
    }
  }

  /* ---------- sequence tracking ---------- */

  private follow(id: Id, position: number): Stream {
    const stream = new Stream(position);
    this.streams.set(id, stream);
    this.emit("subscribed", { conversation_id: id, seq: position });
    return stream;
  }

  /**
   * Declare that the app has every durable event of `conversationId` up to `seq` (from REST:
   * `last_seq` of the conversation it just loaded). Positions only move forward.
   */
  setPosition(conversationId: Id | number, seq: number): void {
    const id = String(conversationId);
    const value = Math.max(0, Number(seq) || 0);
    const stream = this.streams.get(id);
    if (!stream) {
      this.follow(id, value);
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
  track(conversationId: Id | number, seq: number): void {
    if (!this.streams.has(String(conversationId))) this.setPosition(conversationId, seq);
  }

  /** Stop following a conversation (the user left it): no resume, no refetch for it. */
  forget(conversationId: Id | number): void {
    this.unfollow(String(conversationId), "forgotten");
  }

  private unfollow(id: Id, reason: UnsubscribedEvent["reason"]): void {
    const stream = this.streams.get(id);
    if (!stream) return;
    if (stream.gapTimer) clearTimeout(stream.gapTimer);
    this.streams.delete(id);
    this.emit("unsubscribed", { conversation_id: id, reason });
  }

  /**
   * A durable event from the socket, a resume replay, a REST refetch or (with `own`) the
   * client's own ack: emitted once per `seq`, in `seq` order.
   */
  private offer(frame: DurableEvent | OwnMarker, own = false): void {
    const id = String(frame.conversation_id);
    const seq = Number(frame.seq);
    if (!Number.isInteger(seq) || seq < 1) return;
    // A conversation the app never told us about (one the user was just added to): its first
    // event we see is where we start from.
    const stream = this.streams.get(id) ?? this.follow(id, seq - 1);
    if (seq <= stream.position) return; // had it already
    const held = stream.held.get(seq);
    if (held) {
      // The event of our own message waits behind a gap and its ack has just settled the
      // outbox: once the gap fills it must not be handed out as someone else's message (the
      // app has it from sendMessage's promise).
      if (own) held.own = true;
      return;
    }
    stream.held.set(seq, { frame, own });
    this.drain(id, stream);
  }

  private drain(id: Id, stream: Stream): void {
    for (;;) {
      const next = stream.position + 1;
      const held = stream.held.get(next);
      if (!held) break;
      stream.held.delete(next);
      stream.position = next;
      if (!held.own) this.deliver(held.frame as DurableEvent);
      if (this.streams.get(id) !== stream) return; // forgotten by a handler or by deliver()
    }
    if (!stream.hasGap) {
      if (stream.gapTimer) clearTimeout(stream.gapTimer);
      stream.gapTimer = null;
    } else if (!stream.gapTimer && !stream.fetching) {
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

  private deliver(frame: DurableEvent): void {
    if (frame.type === "message") {
      const message = frame.message ?? ({} as Message);
      const entry = message.client_id != null ? this.outbox.get(String(message.client_id)) : undefined;
      if (entry && String(message.sender_id) === String(this.userId ?? message.sender_id)) {
        // Our own message, stored before its ack was lost: the resend is no longer needed,
        // and the app learns of it through sendMessage's promise, not as someone's message.
        this.settleOutbox(entry, message);
        return;
      }
    }
    this.emit(frame.type, frame as never);
    if (
      frame.type === "member" &&
      frame.action === "removed" &&
      this.userId != null &&
      String(frame.user_id) === String(this.userId)
    ) {
      this.unfollow(String(frame.conversation_id), "removed"); // the last event of it for us
    }
  }

  /** A `seq` the server answered us with (an ack or a REST reply): ours, nothing to show. */
  private noteOwn(conversationId: unknown, seq: unknown): void {
    if (conversationId == null || seq == null) return;
    this.offer({ type: "own", conversation_id: String(conversationId), seq: Number(seq) }, true);
  }

  /**
   * Send `resume` for every followed conversation; the outbox goes once it is answered. False
   * when there is nothing to resume.
   */
  private resume(): boolean {
    const positions = this.positions;
    const socket = this.socket;
    if (!Object.keys(positions).length) return false;
    const pending = this.sendFrame("resume", { positions });
    this.resuming = pending;
    pending.then(
      (ack) => {
        if (this.socket !== socket) return;
        this.resuming = null;
        this.applyResume(ack.conversations ?? {});
        this.emit("resumed", { conversations: ack.conversations ?? {} });
        this.flushOutbox();
      },
      (err: RealtimeError) => {
        if (this.socket !== socket) return;
        this.resuming = null;
        // A server that cannot resume (or a timeout): catch up by REST instead.
        for (const id of this.streams.keys()) void this.refetch(id);
        this.emit("error", err);
        this.flushOutbox();
      },
    );
    return true;
  }

  /**
   * A stream opened with a `Last-Event-ID` replays by itself; one opened without (the first,
   * or after a refused cursor) starts at each conversation's latest `seq`, so REST fetches
   * what lies between. A fetch that failed is owed on every later stream connect.
   */
  private streamCatchUp(): boolean {
    this.scheduleProbe();
    if (!this.cursorSent) for (const id of this.streams.keys()) this.catchUp.add(id);
    for (const id of [...this.catchUp]) {
      if (this.streams.has(id)) void this.refetch(id);
      else this.catchUp.delete(id);
    }
    return false;
  }

  private applyResume(conversations: Record<Id, ResumeAnswer>): void {
    for (const [id, answer] of Object.entries(conversations)) {
      const stream = this.streams.get(String(id));
      if (!stream) continue;
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
  private async refetch(id: Id, latest: number | null = null): Promise<void> {
    const stream = this.streams.get(id);
    if (!stream || stream.fetching) return;
    if (latest != null && latest - stream.position > this.refetchLimit) {
      this.resetStream(id, stream, latest, "too_far_behind");
      return;
    }
    stream.fetching = true;
    if (stream.gapTimer) clearTimeout(stream.gapTimer);
    stream.gapTimer = null;
    this.emit("recovery", { conversation_id: id, status: "refetching", seq: latest, source: "rest" });
    let fetched = 0;
    try {
      for (;;) {
        const from = stream.position;
        const page = (await this.request(
          "GET",
          `/api/conversations/${encodeURIComponent(id)}/events?after_seq=${from}`,
        )) as EventsPage | null;
        if (this.streams.get(id) !== stream) return;
        const events = page?.events ?? [];
        for (const frame of events) {
          if (frame.event_id !== undefined) this.seen.add(String(frame.event_id));
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
      const status = (err as RealtimeError).status;
      if (status === 403 || status === 404) {
        this.unfollow(id, "not_participant");
        this.emit("reset", { conversation_id: id, reason: "not_participant", seq: null });
        return;
      }
      // Offline again, or the server failed: the next resume (or gap timer) tries again.
      this.emit("recovery", { conversation_id: id, status: "failed", seq: stream.position, source: "rest" });
      return;
    } finally {
      stream.fetching = false;
    }
    if (this.streams.get(id) === stream) {
      this.catchUp.delete(id);
      this.emit("recovery", { conversation_id: id, status: "caught_up", seq: stream.position, source: "rest" });
      this.drain(id, stream);
    }
  }

  private resetStream(id: Id, stream: Stream, seq: number, reason: "too_far_behind"): void {
    this.catchUp.delete(id);
    stream.position = Math.max(stream.position, Number(seq));
    for (const held of [...stream.held.keys()]) if (held <= stream.position) stream.held.delete(held);
    this.emit("reset", { conversation_id: id, reason, seq: stream.position });
    this.drain(id, stream);
  }

  private settle(ref: string, fn: (entry: PendingReply) => void): void {
    const entry = this.pending.get(ref);
    if (!entry) return;
    this.pending.delete(ref);
    clearTimeout(entry.timer);
    fn(entry);
  }

  private startHeartbeat(): void {
    this.stopHeartbeat();
    const intervalMs = Math.max(100, this.heartbeatInterval * 1000);
    this.heartbeatTimer = setInterval(() => {
      const socket = this.socket;
      if (!socket) return;
      // Two silent intervals (not even a pong) mean a half-open TCP connection: drop it.
      if (Date.now() - this.lastFrameAt > 2 * intervalMs + 1000) {
        this.handleClose(socket, 4000, "heartbeat timeout");
        try {
          socket.close();
        } catch {
          // already gone
        }
        return;
      }
      this.rawSend({ type: "ping" });
    }, intervalMs);
  }

  private stopHeartbeat(): void {
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  private rawSend(frame: Record<string, unknown>): boolean {
    try {
      if (!this.socket) return false;
      this.socket.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /* ---------- sending ---------- */

  /**
   * Send a client frame; resolves with the `ack` frame, rejects with a RealtimeError built
   * from the `error` frame with the same `ref`. While the socket is down, typing/read/status/
   * message go through their REST twins (the result carries `via: "rest"`).
   */
  send<T extends ClientFrameType>(type: T, payload?: ClientPayload<T>): Promise<SendResult> {
    const fields = (payload ?? {}) as Record<string, unknown>;
    if (!this.isOpen || !this.socket || this.transport === "sse") {
      // On the stream, REST is the only way to write.
      if ((this.restFallback || this.transport === "sse") && REST_TWINS[type]) return this.sendRest(type, fields);
      return Promise.reject(new RealtimeError("not_connected", `socket is ${this.state}`));
    }
    return this.sendFrame(type, fields).then((ack) => {
      if (type === "read" && ack.seq != null) this.noteOwn(fields.conversation_id, ack.seq);
      return ack;
    });
  }

  /** `send` over the socket only (no REST twin). */
  private sendFrame(type: string, payload: Record<string, unknown>): Promise<AckFrame> {
    if (!this.socket || !this.connection) {
      return Promise.reject(new RealtimeError("not_connected", `socket is ${this.state}`));
    }
    const ref = `r${++this.refCounter}`;
    return new Promise<AckFrame>((resolve, reject) => {
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

  private async sendRest(type: ClientFrameType, payload: Record<string, unknown>): Promise<AckFrame> {
    const twin = REST_TWINS[type] as RestTwin;
    const body = await this.request("POST", twin.path(payload), twin.body(payload));
    const seq = asRecord(body).seq;
    if (type === "read" && seq != null) this.noteOwn(payload.conversation_id, seq);
    return { type: "ack", ref: "", via: "rest", ...twin.result(body) } as AckFrame;
  }

  /** An authenticated REST call; resolves with the JSON body, rejects with a RealtimeError. */
  async request(method: string, path: string, body?: unknown): Promise<unknown> {
    const headers: Record<string, string> = {
      Authorization: `Token ${this.token ?? ""}`,
      Accept: "application/json",
    };
    const init: RequestInit = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (!this.fetchImpl) throw new RealtimeError("network_error", "no fetch implementation");
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.apiBase}${path}`, init);
    } catch (err) {
      throw new RealtimeError("network_error", String(err));
    }
    const text = await response.text();
    let data: unknown = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { detail: text };
    }
    if (!response.ok) {
      const detail = asRecord(data).detail;
      const err = new RealtimeError(
        `http_${response.status}`,
        typeof detail === "string" ? detail : response.statusText,
        asRecord(data),
      );
      err.status = response.status;
      throw err;
    }
    return data;
  }

  typing(conversationId: Id, isTyping = true): Promise<SendResult> {
    return this.send("typing", { conversation_id: conversationId, is_typing: isTyping });
  }

  markRead(conversationId: Id, messageIds: Id[]): Promise<SendResult> {
    return this.send("read", { conversation_id: conversationId, message_ids: messageIds });
  }

  setStatus(status: UserStatus): Promise<SendResult> {
    return this.send("status", { status });
  }

  /**
   * Send a message; resolves with the stored message once the server has it, however many
   * reconnects that takes. It waits in the outbox under its `client_id` (generated unless
   * given) and is sent again after every reconnect until acknowledged; the server stores it
   * once. Rejects only when the server refuses it (`invalid_payload`, `not_participant`,
   * `http_400`, ...) or on close().
   */
  sendMessage(conversationId: Id | number, body: string, options: { clientId?: string } = {}): Promise<Message> {
    const clientId = options.clientId || newClientId(this.random);
    const existing = this.outbox.get(clientId);
    if (existing) return existing.promise;
    let resolve!: (message: Message) => void;
    let reject!: (err: RealtimeError) => void;
    const promise = new Promise<Message>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const entry: OutboxEntry = {
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
  private flushOutbox(): void {
    if (this.outboxTimer !== null) clearTimeout(this.outboxTimer);
    this.outboxTimer = null;
    for (const entry of [...this.outbox.values()]) this.sendEntry(entry);
  }

  private sendEntry(entry: OutboxEntry): void {
    if (entry.inFlight || !this.outbox.has(entry.client_id)) return;
    // While a resume is under way its replay may already hold this message: wait for the ack.
    if (this.resuming) return;
    const payload = { conversation_id: entry.conversation_id, body: entry.body, client_id: entry.client_id };
    let attempt: Promise<Message>;
    if (this.isOpen && this.socket && this.transport === "websocket") {
      attempt = this.sendFrame("message", payload).then((ack) => ack.message as Message);
    } else if ((this.restFallback || this.transport === "sse") && this.fetchImpl) {
      const twin = REST_TWINS.message as RestTwin;
      attempt = this.request("POST", twin.path(payload), twin.body(payload)) as Promise<Message>;
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
      (err: RealtimeError) => {
        entry.inFlight = false;
        if (!this.outbox.has(entry.client_id)) return;
        const status = err.status ?? 0;
        if (RETRYABLE_SEND_CODES.has(err.code) || status === 429 || status >= 500) {
          this.retryOutboxLater();
          return;
        }
        this.outbox.delete(entry.client_id);
        entry.reject(err);
      },
    );
  }

  private retryOutboxLater(): void {
    // A socket that opens flushes at once; this covers the REST path (socket blocked, server
    // briefly failing) and an ack that never came on a socket that stays open.
    if (this.outboxTimer !== null || !this.wanted) return;
    const delay = backoffDelay(this.outboxAttempt++, this.backoff, this.random);
    this.outboxTimer = setTimeout(() => {
      this.outboxTimer = null;
      this.flushOutbox();
    }, delay);
  }

  private settleOutbox(entry: OutboxEntry, message: Message): void {
    if (!this.outbox.has(entry.client_id)) return;
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
  setToken(token: string | TokenGrant): Promise<AckFrame | null> {
    const grant = typeof token === "string" ? { token } : token;
    if (!grant.token) throw new Error("setToken needs a token");
    const adopt = (expiresAt: string | null | undefined): void => {
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
