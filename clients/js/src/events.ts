/** What a RealtimeClient emits: the server's events plus its own connection and stream news. */

import type {
  ConnectedEvent,
  Id,
  MemberEvent,
  MessageEvent,
  PresenceEvent,
  ReadEvent,
  ResumeAnswer,
  Transport,
  TypingEvent,
} from "./protocol.js";
import type { RealtimeError } from "./util.js";

export const STATES = Object.freeze({
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
} as const);
export type ConnectionState = (typeof STATES)[keyof typeof STATES];

/** Why the client waits before its next connect. */
export type ReconnectCause =
  | "dropped" // the socket closed or never opened: full-jitter backoff
  | "draining" // 1012: another instance is ready, come back at once
  | "retry_after" // 1013 with `retry_after_ms=N`: uniform in [N, 2N)
  | "overloaded" // 1013 without a hint: full-jitter backoff
  | "too_many" // 4429: backoff from a long step
  | "token_refresh"; // 4401 with a token-refresh callback: fetch a token, then connect

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  code?: number;
  reason?: string;
  delay?: number;
  attempt?: number;
  instanceId?: string;
  /** What carries events (`websocket`, or `sse` with REST writes). */
  transport?: Transport;
  /** The socket was closed with 4401 and no fresh token came: the user must sign in again. */
  signedOut?: boolean;
}

export interface ConnectingEvent {
  url: string;
  /** Connects since the last `connected` (0 for the first try). */
  attempt: number;
}

export interface DisconnectedEvent {
  code: number;
  reason: string;
  url: string;
  willReconnect: boolean;
}

export interface ReconnectingEvent {
  /** Milliseconds until the next connect. */
  delay: number;
  attempt: number;
  cause: ReconnectCause;
  code: number;
  reason: string;
  /** The URL the next connect goes to (the failover list, round robin). */
  url: string;
}

export interface ResumedEvent {
  conversations: Record<Id, ResumeAnswer>;
}

export interface ResetEvent {
  conversation_id: Id;
  reason: "not_participant" | "too_far_behind";
  seq: number | null;
}

export interface SubscribedEvent {
  conversation_id: Id;
  /** The position the client follows it from. */
  seq: number;
}

export interface UnsubscribedEvent {
  conversation_id: Id;
  /** `forgotten` by the app, `removed` by a member event, `not_participant` per the server. */
  reason: "forgotten" | "removed" | "not_participant";
}

/**
 * One conversation's catch-up after a connect: `recovered` (the resume replayed everything),
 * `refetching` (the client fetches what is missing by REST), `caught_up` (the REST fetch
 * reached the latest `seq`), `failed` (the fetch failed; the next resume tries again).
 */
export interface RecoveryEvent {
  conversation_id: Id;
  status: "recovered" | "refetching" | "caught_up" | "failed";
  seq: number | null;
  source: "resume" | "rest";
}

export interface ClientEventMap {
  connected: ConnectedEvent;
  message: MessageEvent;
  typing: TypingEvent;
  read: ReadEvent;
  member: MemberEvent;
  presence: PresenceEvent;
  error: RealtimeError;
  state: StateChange;
  connecting: ConnectingEvent;
  disconnected: DisconnectedEvent;
  reconnecting: ReconnectingEvent;
  resumed: ResumedEvent;
  reset: ResetEvent;
  subscribed: SubscribedEvent;
  unsubscribed: UnsubscribedEvent;
  recovery: RecoveryEvent;
}
export type ClientEventType = keyof ClientEventMap;
export type Handler<K extends ClientEventType> = (event: ClientEventMap[K]) => void;

export const EVENT_TYPES: ReadonlySet<string> = new Set<ClientEventType>([
  "connected",
  "message",
  "typing",
  "read",
  "member",
  "presence",
  "error",
  "state",
  "connecting",
  "disconnected",
  "reconnecting",
  "resumed",
  "reset",
  "subscribed",
  "unsubscribed",
  "recovery",
]);
