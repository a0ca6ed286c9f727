/**
 * The server-sent events transport (`GET /api/events/stream`, docs/protocol.md "Server-sent
 * events"), shaped like a WebSocket so that the client drives it with the same code: each
 * stream event becomes one `onmessage` with the frame's JSON, a `close` event or a refusal
 * becomes one `onclose` with the code a WebSocket would have got.
 *
 * It reads the stream with `fetch` rather than `EventSource`: only `fetch` sees the status and
 * headers of a refusal (`503` + `Retry-After`), carries the token in a header (no token in
 * access logs), and leaves reconnecting to the client, which owns the backoff and failover.
 */

import type { FetchLike, WebSocketLike } from "./client.js";
import {
  CLOSE_FORBIDDEN,
  CLOSE_SERVICE_RESTART,
  CLOSE_TOO_MANY,
  CLOSE_TRY_AGAIN_LATER,
  CLOSE_UNAUTHORIZED,
  type CloseStreamEvent,
  type ResyncEvent,
} from "./protocol.js";

/** The path of the stream, under the API origin. */
export const STREAM_PATH = "/api/events/stream";

/** A `400` to a `Last-Event-ID`: the cursor is not believed, reconnect without it. */
export const CLOSE_BAD_CURSOR = 4400;

/** The events a stream carries beyond a WebSocket's frames. */
export type StreamOnlyEvent = ResyncEvent | CloseStreamEvent;

export interface EventStreamOptions {
  fetch: FetchLike;
  /** Full URL of the stream. */
  url: string;
  token: string;
  /** The last `id:` seen, sent back as `Last-Event-ID` (null on a first connect). */
  lastEventId: string | null;
  /** Called with every `id:` the stream sends, before its event is handed on. */
  onEventId: (id: string) => void;
}

/** The close code a WebSocket handshake would have got for a refused stream's status. */
export function closeCodeForStatus(status: number): number {
  switch (status) {
    case 400:
      return CLOSE_BAD_CURSOR;
    case 401:
      return CLOSE_UNAUTHORIZED;
    case 403:
      return CLOSE_FORBIDDEN;
    case 429:
      return CLOSE_TOO_MANY;
    case 503:
      return CLOSE_TRY_AGAIN_LATER;
    default:
      return 1006;
  }
}

/** Milliseconds of a 503's `X-Retry-After-Ms` (or its `Retry-After` seconds), null if none. */
export function retryHeaderMs(headers: Headers): number | null {
  const ms = Number(headers.get("x-retry-after-ms") ?? NaN);
  if (Number.isFinite(ms) && ms >= 0) return Math.round(ms);
  const seconds = Number(headers.get("retry-after") ?? NaN);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.round(seconds * 1000);
  return null;
}

/** Parses `text/event-stream` incrementally (the WHATWG rules the server's output needs). */
export class EventStreamParser {
  private buffer = "";
  private event = "";
  private data: string[] = [];
  private id: string | null = null;

  constructor(
    private readonly onEvent: (event: string, data: string, id: string | null) => void,
    private readonly onComment: () => void = () => {},
  ) {}

  feed(chunk: string): void {
    this.buffer += chunk;
    for (;;) {
      const end = this.buffer.search(/\r\n|\r|\n/);
      if (end < 0) return;
      const line = this.buffer.slice(0, end);
      const width = this.buffer.startsWith("\r\n", end) ? 2 : 1;
      this.buffer = this.buffer.slice(end + width);
      this.line(line);
    }
  }

  private line(line: string): void {
    if (line === "") {
      if (this.data.length) this.onEvent(this.event || "message", this.data.join("\n"), this.id);
      this.event = "";
      this.data = [];
      this.id = null;
      return;
    }
    if (line.startsWith(":")) {
      this.onComment();
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.id = value;
  }
}

/**
 * One stream as a `WebSocketLike`. `send` takes only `ping` (answered locally while the stream
 * shows signs of life, so the client's heartbeat judges the stream as it judges a socket);
 * every write goes through REST instead.
 */
export class EventStreamSocket implements WebSocketLike {
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  private readonly abort = new AbortController();
  private ended = false;
  private alive = true;

  constructor(private readonly options: EventStreamOptions) {
    // The caller sets the handlers right after construction: start on the next turn.
    queueMicrotask(() => void this.run());
  }

  send(data: string): void {
    let frame: { type?: unknown } = {};
    try {
      frame = JSON.parse(data) as { type?: unknown };
    } catch {
      return;
    }
    if (frame.type !== "ping" || this.ended || !this.alive) return;
    this.alive = false;
    this.deliver(JSON.stringify({ type: "pong" }));
  }

  close(code = 1000, reason = ""): void {
    this.abort.abort();
    this.end(code, reason);
  }

  private deliver(data: string): void {
    if (!this.ended) this.onmessage?.({ data });
  }

  private end(code: number, reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.abort.abort();
    this.onclose?.({ code, reason });
  }

  private async run(): Promise<void> {
    const { options } = this;
    const headers: Record<string, string> = {
      Accept: "text/event-stream",
      Authorization: `Token ${options.token}`,
    };
    if (options.lastEventId) headers["Last-Event-ID"] = options.lastEventId;
    let response: Response;
    try {
      response = await options.fetch(options.url, {
        method: "GET",
        headers,
        cache: "no-store",
        signal: this.abort.signal,
      });
    } catch (err) {
      this.end(1006, String(err));
      return;
    }
    if (response.status !== 200 || !response.body) {
      const wait = retryHeaderMs(response.headers);
      const code = closeCodeForStatus(response.status);
      // The same reason a WebSocket's 1013 carries, so the same retry rule reads it.
      const reason = wait === null ? `http ${response.status}` : `retry_after_ms=${wait}`;
      try {
        await response.body?.cancel();
      } catch {
        // nothing to release
      }
      this.end(code, reason);
      return;
    }
    const parser = new EventStreamParser(
      (event, data, id) => this.onEvent(event, data, id),
      () => {
        this.alive = true;
      },
    );
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        this.alive = true;
        parser.feed(value);
        if (this.ended) return;
      }
    } catch (err) {
      this.end(1006, String(err));
      return;
    }
    // Ended with no `close` event: the instance went away mid-stream.
    this.end(1006, "stream ended");
  }

  private onEvent(event: string, data: string, id: string | null): void {
    if (this.ended) return;
    if (id) this.options.onEventId(id);
    if (event === "close") {
      let code = CLOSE_SERVICE_RESTART;
      try {
        code = Number((JSON.parse(data) as CloseStreamEvent).code) || code;
      } catch {
        // a garbled close still ends the stream; reconnecting is the safe answer
      }
      this.end(code, "stream closed");
      return;
    }
    this.deliver(data);
  }
}

/** The stream URL of a socket URL's origin (`wss://h/ws/` -> `https://h/api/events/stream`). */
export function streamUrl(apiBase: string): string {
  return `${apiBase.replace(/\/+$/, "")}${STREAM_PATH}`;
}
