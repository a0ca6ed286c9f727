// Shared test helpers: a scripted socket, and polling with a deadline instead of sleeping.

/** A WebSocket double: records what the client sends; the test pushes frames and closes. */
export class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.all.push(this);
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close(code = 1000) {
    this.closedByClient = code;
  }
  push(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(code, reason = "") {
    this.onclose?.({ code, reason });
  }
  static last() {
    return FakeSocket.all.at(-1);
  }
}

export const connectedFrame = (extra = {}) => ({
  type: "connected",
  event_id: `e-connected-${FakeSocket.all.length}-${Math.random()}`,
  connection_id: "k1",
  instance_id: "web-a",
  user_id: "1",
  heartbeat_interval: 20,
  ...extra,
});

/** Polls `check()` until it is truthy; throws after `ms` (no sleep-and-assert). */
export async function until(check, ms = 5000, what = String(check)) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Records every emitted event of the listed types, in order, as [type, payload]. */
export function record(client, types) {
  const seen = [];
  for (const type of types) client.on(type, (event) => seen.push([type, event]));
  return seen;
}
