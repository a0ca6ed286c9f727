/** Small pieces the client is made of, exported for apps and tests. */

import type { Random } from "./backoff.js";
import type { ErrorFrame } from "./protocol.js";

/** An `error` frame, a refused REST call or a local failure, as a rejected promise's reason. */
export class RealtimeError extends Error {
  /** The frame's `code` (`not_participant` ...), `http_<status>`, or a local one. */
  readonly code: string;
  /** The `error` frame or the REST error body, when there is one. */
  readonly frame: ErrorFrame | Record<string, unknown> | null;
  /** The HTTP status of a refused REST call. */
  status?: number;
  /** The close code that ended the socket (`unauthorized`, `forbidden`). */
  closeCode?: number;

  constructor(
    code: string,
    message?: string,
    frame: ErrorFrame | Record<string, unknown> | null = null,
  ) {
    super(message || code);
    this.name = "RealtimeError";
    this.code = code;
    this.frame = frame;
  }
}

/** A set that remembers the last `limit` keys only (event ids are unbounded over a session). */
export class BoundedSet<T = string> {
  readonly limit: number;
  private readonly items = new Set<T>();

  constructor(limit = 1000) {
    this.limit = Math.max(1, limit);
  }

  has(key: T): boolean {
    return this.items.has(key);
  }

  /** Adds `key`; returns false when it was already there. */
  add(key: T): boolean {
    if (this.items.has(key)) return false;
    this.items.add(key);
    if (this.items.size > this.limit) {
      // Sets iterate in insertion order, so the first key is the oldest.
      const oldest = this.items.values().next();
      if (!oldest.done) this.items.delete(oldest.value);
    }
    return true;
  }

  get size(): number {
    return this.items.size;
  }
}

/** A fresh idempotency key for one message (at most 64 characters, as the server accepts). */
export function newClientId(random: Random = Math.random): string {
  const uuid = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto?.randomUUID;
  if (random === Math.random && uuid) return uuid.call(globalThis.crypto);
  let id = "";
  while (id.length < 32) id += Math.floor(random() * 16).toString(16);
  return id;
}
