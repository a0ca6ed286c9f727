/** Reconnect timing: exponential backoff with full jitter, and the server's retry hint. */

export interface BackoffOptions {
  /** The first nominal delay, in milliseconds. */
  initial: number;
  /** The cap of the nominal delay, in milliseconds. */
  max: number;
  factor: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = Object.freeze({
  initial: 500,
  max: 30_000,
  factor: 2,
});

/** A source of uniform numbers in [0, 1), as `Math.random`. */
export type Random = () => number;

/**
 * The delay before reconnect attempt `attempt` (0-based), in milliseconds: "full jitter", a
 * uniform draw in [0, min(max, initial * factor^attempt)). Thousands of clients dropped by one
 * instance then spread over the whole window instead of coming back together; the cap bounds
 * how long a client waits after a long outage.
 */
export function backoffDelay(
  attempt: number,
  options: Partial<BackoffOptions> = {},
  random: Random = Math.random,
): number {
  const { initial, max, factor } = { ...DEFAULT_BACKOFF, ...options };
  const nominal = Math.min(max, initial * Math.pow(factor, Math.max(0, attempt)));
  return Math.floor(random() * nominal);
}

const RETRY_AFTER = /(?:^|[\s;,])retry_after_ms=(\d+)(?:$|[\s;,])/;

/**
 * The `N` of a `1013` close reason `retry_after_ms=<N>`, or null when the server gave none (an
 * older server, or a proxy that rewrote the close).
 */
export function retryAfterMs(reason: string | null | undefined): number | null {
  const found = RETRY_AFTER.exec(reason ?? "");
  if (!found) return null;
  const value = Number(found[1]);
  return Number.isSafeInteger(value) ? value : null;
}

/**
 * The delay after a `1013` carrying `retry_after_ms=N`: uniform in [N, 2N), so the clients the
 * server turned away together do not all return at N. `N` is capped at `maxMs` so that a
 * garbled hint cannot park a client for hours.
 */
export function hintedDelay(
  hintMs: number,
  maxMs: number = 5 * 60_000,
  random: Random = Math.random,
): number {
  const base = Math.min(Math.max(0, hintMs), maxMs);
  return base + Math.floor(random() * base);
}
