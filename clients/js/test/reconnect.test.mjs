// Reconnect policy against scripted sockets and a real `ws` server: full jitter, the 1013
// retry hint, 1012 drains, the failover list, token refresh, and the codes that stop.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { WebSocket, WebSocketServer } from "ws";

import {
  CLOSE_FORBIDDEN,
  CLOSE_SERVICE_RESTART,
  CLOSE_TRY_AGAIN_LATER,
  CLOSE_UNAUTHORIZED,
  RealtimeClient,
  backoffDelay,
  hintedDelay,
  retryAfterMs,
} from "../dist/client.js";
import { FakeSocket, connectedFrame, record, until } from "./support.mjs";

const clients = [];
function client(options) {
  const made = new RealtimeClient({ WebSocket: FakeSocket, token: "t", url: "ws://x/ws/", ...options });
  clients.push(made);
  return made;
}
after(() => clients.forEach((c) => c.close()));

describe("timing rules", () => {
  test("backoff is full jitter under a doubling nominal delay with a cap", () => {
    const opts = { initial: 100, max: 1000, factor: 2 };
    const bounds = [0, 1, 2, 3, 4, 10].map((n) => [
      backoffDelay(n, opts, () => 0),
      backoffDelay(n, opts, () => 0.999999),
    ]);
    assert.deepEqual(bounds, [[0, 99], [0, 199], [0, 399], [0, 799], [0, 999], [0, 999]]);
    // The default cap is 30 s.
    assert.equal(backoffDelay(50, {}, () => 0.999999), 29_999);
  });

  test("a retry_after_ms hint is read from the close reason and waited in [N, 2N)", () => {
    assert.equal(retryAfterMs("retry_after_ms=1500"), 1500);
    assert.equal(retryAfterMs("busy; retry_after_ms=20"), 20);
    assert.equal(retryAfterMs("Try Again Later"), null);
    assert.equal(retryAfterMs(""), null);
    assert.equal(retryAfterMs("retry_after_ms=abc"), null);
    assert.equal(hintedDelay(1000, undefined, () => 0), 1000);
    assert.equal(hintedDelay(1000, undefined, () => 0.999999), 1999);
    // A garbled huge hint is capped.
    assert.equal(hintedDelay(10 ** 12, 60_000, () => 0), 60_000);
  });
});

describe("close codes", () => {
  test("1013 with a hint waits the hinted delay, then connects to the next URL", async () => {
    const c = client({ url: ["ws://a/ws/", "ws://b/ws/"], random: () => 0.5 });
    const events = record(c, ["reconnecting"]);
    FakeSocket.last().drop(CLOSE_TRY_AGAIN_LATER, "retry_after_ms=40");
    const [, ev] = events.at(-1);
    assert.equal(ev.cause, "retry_after");
    assert.equal(ev.delay, 60); // 40 + 0.5 * 40
    assert.equal(ev.url, "ws://b/ws/");
    const before = FakeSocket.all.length;
    const started = Date.now();
    await until(() => FakeSocket.all.length > before);
    assert.ok(Date.now() - started >= 55, "reconnected before the hint allowed");
    assert.match(FakeSocket.last().url, /^ws:\/\/b\/ws\/\?token=t$/);
  });

  test("1013 without a hint still backs off with full jitter", () => {
    const c = client({ backoff: { initial: 100, max: 400 }, random: () => 0.999 });
    const events = record(c, ["reconnecting"]);
    for (const expected of [99, 199, 399, 399]) {
      FakeSocket.last().drop(CLOSE_TRY_AGAIN_LATER, "Try Again Later");
      const [, ev] = events.at(-1);
      assert.equal(ev.cause, "overloaded");
      assert.equal(ev.delay, expected);
      c.connect(); // skip the wait: the next attempt fails the same way
    }
  });

  test("1012 reconnects at once (within the first backoff step) to the next URL", async () => {
    const c = client({ url: ["ws://a/ws/", "ws://b/ws/", "ws://c/ws/"] });
    const events = record(c, ["reconnecting", "connecting"]);
    FakeSocket.last().push(connectedFrame());
    FakeSocket.last().drop(CLOSE_SERVICE_RESTART, "draining");
    const [, ev] = events.find(([t]) => t === "reconnecting");
    assert.equal(ev.cause, "draining");
    assert.ok(ev.delay < 500, `drain delay ${ev.delay}`);
    await until(() => events.some(([t]) => t === "connecting"), 2000);
    assert.ok(FakeSocket.last().url.startsWith("ws://b/ws/"));
  });

  test("failures go round the failover list", async () => {
    // WebSocket only: with the default `auto`, these failures would end on the stream.
    const c = client({ url: ["ws://a/ws/", "ws://b/ws/"], backoff: { initial: 5, max: 10 }, transport: "websocket" });
    const urls = [FakeSocket.last().url];
    for (let i = 0; i < 4; i++) {
      const socket = FakeSocket.last();
      socket.drop(1006);
      await until(() => FakeSocket.last() !== socket, 2000);
      urls.push(FakeSocket.last().url.split("?")[0]);
    }
    assert.deepEqual(urls.slice(1), ["ws://b/ws/", "ws://a/ws/", "ws://b/ws/", "ws://a/ws/"]);
    assert.equal(c.state, "reconnecting");
  });

  test("4403 stops for good, without asking for a token", async () => {
    let asked = 0;
    const c = client({ refreshToken: () => (asked++, "fresh"), backoff: { initial: 5, max: 10 } });
    const errors = record(c, ["error", "disconnected"]);
    const before = FakeSocket.all.length;
    FakeSocket.last().drop(CLOSE_FORBIDDEN, "user_id mismatch");
    assert.equal(c.state, "closed");
    assert.equal(asked, 0);
    assert.deepEqual(
      errors.map(([t, e]) => [t, e.code, e.willReconnect]),
      [["disconnected", CLOSE_FORBIDDEN, false], ["error", "forbidden", undefined]],
    );
    await new Promise((r) => setTimeout(r, 30)); // room for a (wrong) reconnect
    assert.equal(FakeSocket.all.length, before);
  });
});

describe("token refresh", () => {
  test("on 4401 the callback's token is used for the next connect", async () => {
    const contexts = [];
    const c = client({
      token: "old",
      backoff: { initial: 5, max: 10 },
      refreshToken: async (ctx) => (contexts.push(ctx), { token: "new", expires_at: null }),
    });
    FakeSocket.last().push(connectedFrame());
    const socket = FakeSocket.last();
    socket.drop(CLOSE_UNAUTHORIZED, "token revoked");
    await until(() => FakeSocket.last() !== socket, 2000);
    assert.deepEqual(contexts, [{ reason: "unauthorized", code: CLOSE_UNAUTHORIZED }]);
    assert.ok(FakeSocket.last().url.endsWith("?token=new"));
    assert.equal(c.token, "new");
  });

  test("a callback that yields nothing signs out and stops reconnecting", async () => {
    const c = client({ backoff: { initial: 5, max: 10 }, refreshToken: async () => null });
    const seen = record(c, ["state", "error"]);
    FakeSocket.last().push(connectedFrame());
    const before = FakeSocket.all.length;
    FakeSocket.last().drop(CLOSE_UNAUTHORIZED, "expired");
    await until(() => c.state === "closed", 2000);
    const last = seen.filter(([t]) => t === "state").at(-1)[1];
    assert.equal(last.signedOut, true);
    assert.ok(seen.some(([t, e]) => t === "error" && e.code === "unauthorized"));
    await new Promise((r) => setTimeout(r, 30)); // room for a (wrong) reconnect
    assert.equal(FakeSocket.all.length, before);
  });

  test("an expiring token is refreshed before connecting", async () => {
    const contexts = [];
    const before = FakeSocket.all.length;
    client({
      token: "almost-expired",
      tokenExpiresAt: new Date(Date.now() + 1000).toISOString(),
      refreshToken: (ctx) => (contexts.push(ctx), "fresh"),
    });
    await until(() => FakeSocket.all.length > before, 2000);
    assert.deepEqual(contexts, [{ reason: "expiring" }]);
    assert.ok(FakeSocket.last().url.endsWith("?token=fresh"));
  });

  test("a failing callback is retried with the backoff", async () => {
    let calls = 0;
    const c = client({
      backoff: { initial: 5, max: 10 },
      refreshToken: async () => {
        calls += 1;
        if (calls < 3) throw new Error("auth backend down");
        return "third-time";
      },
    });
    FakeSocket.last().push(connectedFrame());
    const socket = FakeSocket.last();
    socket.drop(CLOSE_UNAUTHORIZED, "expired");
    await until(() => FakeSocket.last() !== socket, 3000);
    assert.equal(calls, 3);
    assert.ok(FakeSocket.last().url.endsWith("?token=third-time"));
    assert.notEqual(c.state, "closed");
  });
});

describe("connection-state events", () => {
  test("connecting, connected, disconnected with its code, reconnecting with its delay", async () => {
    const c = new RealtimeClient({
      WebSocket: FakeSocket,
      token: "t",
      url: "ws://a/ws/",
      autoConnect: false,
      backoff: { initial: 5, max: 10 },
    });
    clients.push(c);
    const seen = record(c, ["connecting", "connected", "disconnected", "reconnecting"]);
    c.connect();
    FakeSocket.last().push(connectedFrame());
    FakeSocket.last().drop(4008, "slow consumer");
    const socket = FakeSocket.last();
    await until(() => FakeSocket.last() !== socket, 2000);
    assert.deepEqual(
      seen.map(([t]) => t),
      ["connecting", "connected", "disconnected", "reconnecting", "connecting"],
    );
    assert.deepEqual(seen[2][1], { code: 4008, reason: "slow consumer", url: "ws://a/ws/", willReconnect: true });
    assert.equal(seen[3][1].cause, "dropped");
    assert.ok(seen[3][1].delay >= 0 && seen[3][1].delay < 5);
  });

  test("per-conversation subscription and recovery events", async () => {
    const c = client({ autoConnect: false, positions: { c1: 3 } });
    const seen = record(c, ["subscribed", "recovery", "unsubscribed"]);
    c.track("c2", 7);
    c.connect();
    const socket = FakeSocket.last();
    socket.push(connectedFrame());
    socket.push({
      type: "ack",
      ref: socket.sent[0].ref,
      conversations: { c1: { recovered: true, seq: 3 }, c2: { recovered: false, seq: null } },
    });
    await until(() => seen.length >= 3);
    assert.deepEqual(seen, [
      ["subscribed", { conversation_id: "c2", seq: 7 }],
      ["recovery", { conversation_id: "c1", status: "recovered", seq: 3, source: "resume" }],
      ["unsubscribed", { conversation_id: "c2", reason: "not_participant" }],
    ]);
  });
});

describe("against a real ws server", () => {
  test("the 1013 close reason from a server is honoured", async () => {
    const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    await new Promise((resolve) => server.once("listening", resolve));
    const connects = [];
    server.on("connection", (socket) => {
      connects.push(Date.now());
      if (connects.length === 1) {
        socket.close(CLOSE_TRY_AGAIN_LATER, "retry_after_ms=200");
      } else {
        socket.send(JSON.stringify(connectedFrame({ event_id: "srv-connected" })));
      }
    });
    const url = `ws://127.0.0.1:${server.address().port}/ws/`;
    const c = new RealtimeClient({ WebSocket, url, token: "t" });
    clients.push(c);
    const seen = record(c, ["disconnected", "reconnecting"]);
    try {
      await until(() => c.isOpen, 5000, "the second connect");
      assert.equal(seen[0][1].code, CLOSE_TRY_AGAIN_LATER);
      assert.equal(seen[1][1].cause, "retry_after");
      assert.ok(seen[1][1].delay >= 200 && seen[1][1].delay < 400, `delay ${seen[1][1].delay}`);
      // The server saw no connect before the hint allowed (the close itself takes some time).
      assert.ok(connects[1] - connects[0] >= 200, `came back after ${connects[1] - connects[0]} ms`);
    } finally {
      c.close();
      for (const socket of server.clients) socket.terminate();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("token refresh on an open socket", () => {
  test("a token about to expire is swapped with an auth frame, without reconnecting", async () => {
    const contexts = [];
    const c = client({
      token: "first",
      // Expiring 50 ms past the margin: the refresh is due while the socket is open.
      tokenExpiresAt: Date.now() + 60_000 + 50,
      refreshToken: (ctx) => (contexts.push(ctx), { token: "second", expires_at: null }),
    });
    const socket = FakeSocket.last();
    assert.ok(socket.url.endsWith("?token=first"));
    socket.push(connectedFrame());
    const auth = await until(() => socket.sent.find((f) => f.type === "auth"), 3000);
    assert.equal(auth.token, "second");
    socket.push({ type: "ack", ref: auth.ref, user_id: "1", expires_at: new Date(Date.now() + 3_600_000).toISOString() });
    await until(() => c.token === "second", 2000);
    assert.deepEqual(contexts, [{ reason: "expiring" }]);
    assert.equal(FakeSocket.last(), socket);
    assert.equal(c.state, "open");
  });
});
