/**
 * The wire contract of the realtime backbone (docs/protocol.md) as types: every client frame,
 * every server frame, the close codes and the REST bodies this client uses.
 */

/** Ids are strings on the wire, user ids included. */
export type Id = string;
/** ISO 8601 with a UTC offset. */
export type Timestamp = string;

export type UserStatus = "online" | "away" | "busy" | "offline";

// ---- close codes ---------------------------------------------------------------------------

export const CLOSE_NORMAL = 1000;
/** Frame too large, whatever its size. */
export const CLOSE_MESSAGE_TOO_BIG = 1009;
/** The instance is draining: another one will take the client, so reconnect at once. */
export const CLOSE_SERVICE_RESTART = 1012;
/** Too many connects in flight; the reason may say `retry_after_ms=<N>`. */
export const CLOSE_TRY_AGAIN_LATER = 1013;
/** The client read too slowly and its queue overflowed: reconnect and resume. */
export const CLOSE_SLOW_CONSUMER = 4008;
/** Missing, invalid, revoked or expired token, or a deactivated user. */
export const CLOSE_UNAUTHORIZED = 4401;
/** `user_id` does not match the token: retrying cannot help. */
export const CLOSE_FORBIDDEN = 4403;
/** Too many sockets for this user, or sustained flooding: back off hard. */
export const CLOSE_TOO_MANY = 4429;

export type CloseCode =
  | typeof CLOSE_NORMAL
  | typeof CLOSE_MESSAGE_TOO_BIG
  | typeof CLOSE_SERVICE_RESTART
  | typeof CLOSE_TRY_AGAIN_LATER
  | typeof CLOSE_SLOW_CONSUMER
  | typeof CLOSE_UNAUTHORIZED
  | typeof CLOSE_FORBIDDEN
  | typeof CLOSE_TOO_MANY;

// ---- REST bodies ---------------------------------------------------------------------------

/** `POST /api/conversations/{id}/messages` (201/200), and the `message` of acks and events. */
export interface Message {
  id: Id;
  conversation_id: Id;
  sender_id: Id;
  body: string;
  created_at: Timestamp;
  seq: number;
  client_id?: string | null;
}

/** `POST /api/auth/token` -> 200. */
export interface TokenGrant {
  token: string;
  expires_at?: Timestamp | null;
}

export interface Participant {
  id: Id;
  username: string;
}

/** `GET /api/conversations/{id}` and each item of `GET /api/conversations`. */
export interface Conversation {
  id: Id;
  title: string;
  participant_ids: Id[];
  participants: Participant[];
  created_at: Timestamp;
  last_seq: number;
}

/** `GET /api/conversations` (cursor paginated). */
export interface ConversationPage {
  next?: string | null;
  previous?: string | null;
  results: Conversation[];
}

/** `GET /api/conversations/{id}/events?after_seq=N`. */
export interface EventsPage {
  events: DurableEvent[];
  last_seq: number;
}

/** `POST /api/conversations/{id}/typing`. */
export interface TypingResult {
  conversation_id: Id;
  is_typing: boolean;
}

/** `POST /api/messages/read`. */
export interface ReadResult {
  conversation_id: Id;
  message_ids: Id[];
  read_at: Timestamp;
  seq?: number;
}

/** `POST /api/user/status`. */
export interface StatusResult {
  user_id: Id;
  status: UserStatus;
  updated_at: Timestamp;
}

/** Error bodies: `{"detail"}` or DRF's field-error object. */
export type ErrorBody = { detail: string } | Record<string, unknown>;

// ---- client -> server frames ---------------------------------------------------------------

interface ClientFrameBase {
  /** Any string up to 64 characters; the `ack` or `error` carries it back. */
  ref?: string;
}

export interface PingFrame extends ClientFrameBase {
  type: "ping";
}
export interface TypingFrame extends ClientFrameBase {
  type: "typing";
  conversation_id: Id;
  is_typing: boolean;
}
export interface ReadFrame extends ClientFrameBase {
  type: "read";
  conversation_id: Id;
  message_ids: Id[];
}
export interface StatusFrame extends ClientFrameBase {
  type: "status";
  status: UserStatus;
}
export interface MessageFrame extends ClientFrameBase {
  type: "message";
  conversation_id: Id;
  body: string;
  /** Idempotency key (at most 64 characters): a repeat creates nothing and gets the first ack. */
  client_id?: string;
}
export interface ResumeFrame extends ClientFrameBase {
  type: "resume";
  /** `{conversation_id: last seq the client has}`. */
  positions: Record<Id, number>;
}
/** Swap the open socket's token for a fresh one. */
export interface AuthFrame extends ClientFrameBase {
  type: "auth";
  token: string;
}

export type ClientFrame =
  | PingFrame
  | TypingFrame
  | ReadFrame
  | StatusFrame
  | MessageFrame
  | ResumeFrame
  | AuthFrame;
export type ClientFrameType = ClientFrame["type"];
/** A client frame's fields, without `type` and `ref` (the client adds them). */
export type ClientPayload<T extends ClientFrameType> = Omit<
  Extract<ClientFrame, { type: T }>,
  "type" | "ref"
>;

// ---- server -> client frames ---------------------------------------------------------------

interface ServerEventBase {
  /** Unique per event: a socket receives a given `event_id` at most once. */
  event_id: string;
  ts?: Timestamp;
}

export interface ConnectedEvent extends ServerEventBase {
  type: "connected";
  connection_id: string;
  instance_id: string;
  user_id: Id;
  /** Seconds between the client's pings. */
  heartbeat_interval: number;
}
export interface TypingEvent extends ServerEventBase {
  type: "typing";
  conversation_id: Id;
  user_id: Id;
  is_typing: boolean;
}
export interface PresenceEvent extends ServerEventBase {
  type: "presence";
  user_id: Id;
  status: UserStatus;
  last_seen: Timestamp | null;
}
export interface MessageEvent extends ServerEventBase {
  type: "message";
  conversation_id: Id;
  seq: number;
  message: Message;
}
export interface ReadEvent extends ServerEventBase {
  type: "read";
  conversation_id: Id;
  seq: number;
  user_id: Id;
  message_ids: Id[];
  read_at: Timestamp;
}
export interface MemberEvent extends ServerEventBase {
  type: "member";
  conversation_id: Id;
  seq: number;
  user_id: Id;
  action: "added" | "removed";
  by: Id;
}
/** Events with a per-conversation `seq`: delivered once each, in `seq` order. */
export type DurableEvent = MessageEvent | ReadEvent | MemberEvent;
export type DurableType = DurableEvent["type"];

export interface PongFrame {
  type: "pong";
  event_id?: string;
  ts?: Timestamp;
}

/** The answer of one conversation in a resume `ack`. */
export interface ResumeAnswer {
  recovered: boolean;
  /** The conversation's latest `seq`; `null` when the caller is not a participant. */
  seq: number | null;
}

/** An `ack`: the `ref` of the frame it answers plus that frame's result. */
export interface AckFrame {
  type: "ack";
  ref: string;
  event_id?: string;
  ts?: Timestamp;
  /** `message` frames: the stored message. */
  message?: Message;
  /** `read` frames. */
  read_at?: Timestamp;
  seq?: number;
  /** `resume` frames. */
  conversations?: Record<Id, ResumeAnswer>;
  /** `auth` frames. */
  user_id?: Id;
  expires_at?: Timestamp;
  /** REST fallback: the result came from the REST twin of the frame. */
  via?: "rest";
  [field: string]: unknown;
}

export type ErrorCode =
  | "invalid_json"
  | "unknown_type"
  | "invalid_payload"
  | "not_participant"
  | "not_found"
  | "rate_limited";

export interface ErrorFrame {
  type: "error";
  ref?: string;
  code: ErrorCode | string;
  message: string;
  event_id?: string;
  ts?: Timestamp;
}

/** Server-sent events only: a conversation too far behind to replay; refetch it by REST. */
export interface ResyncEvent extends ServerEventBase {
  type: "resync";
  conversation_id: Id;
}

/** Server-sent events only: the stream's last event, with the code a WebSocket would get. */
export interface CloseStreamEvent extends ServerEventBase {
  type: "close";
  code: number;
}

/** How the client reaches the server: a WebSocket, or server-sent events plus REST writes. */
export type Transport = "websocket" | "sse";

export type ServerEvent = ConnectedEvent | TypingEvent | PresenceEvent | DurableEvent;
export type ServerFrame = ServerEvent | PongFrame | AckFrame | ErrorFrame;
export type ServerFrameType = ServerFrame["type"];
