// The server-sent events fallback against a scripted HTTP server: when the client takes the
// stream, what it sends back (Last-Event-ID, the token), how it answers a stream's refusals and
// `close` events, its REST writes, and the move back to a WebSocket.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, describe, test } from "node:test";

import { EventStreamParser, RealtimeClient } from "../dist/client.js";
import { FakeSocket, connectedFrame, record, until } from "./support.mjs";

/** A stream server: each GET of the stream is answered by the next scripted handler. */
const server = {
  requests: [], // {method, path, headers, body}
  streams: [], // open stream responses, newest last
  script: [], // functions (res, req) answering the next stream GETs; default: 200 + connected
  rest: (req, body, res) => json(res, 200, {}),
};
let base = "";

function json(res, status, body, headers = {}) {
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

function sse(res, type, frame, id = null) {
  res.write(`event: ${type}\n${id ? `id: ${id}\n` : ""}data: ${JSON.stringify({ type, ...frame })}\n\n`);
}

function openStream(res, frames = []) {
  res.writeHead(200, { "Content-Type": "text/event-stream" });
  res.write("retry: 1000\n\n");
  server.streams.push(res);
  res.on("close", () => (res.ended = true));
  for (const [type, frame, id] of frames) sse(res, type, frame, id);
}

const http = createServer((req, res) => {
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    const entry = { method: req.method, path: req.url, headers: req.headers, body: body ? JSON.parse(body) : null };
    server.requests.push(entry);
    if (req.url.startsWith("/api/events/stream")) {
      const next = server.script.shift() ?? ((r) => openStream(r, [["connected", connectedFrame(), "cur-0"]]));
      next(res, entry);
      return;
    }
    server.rest(entry, res);
  });
});

before(async () => {
  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  base = `127.0.0.1:${http.address().port}`;
});

const clients = [];
after(async () => {
  clients.forEach((c) => c.close());
  server.streams.forEach((res) => res.destroy());
  http.closeAllConnections();
  await new Promise((resolve) => http.close(resolve));
});

function reset() {
  // A client a failed test left open must not answer the next test's script.
  clients.forEach((c) => c.close());
  server.requests.length = 0;
  server.script.length = 0;
  server.streams.forEach((res) => res.destroy());
  server.streams.length = 0;
  server.rest = (req, res) => json(res, 200, {});
}

function client(options) {
  const made = new RealtimeClient({
    WebSocket: FakeSocket,
    token: "t",
    url: `ws://${base}/ws/`,
    backoff: { initial: 5, max: 10 },
    ...options,
  });
  clients.push(made);
  return made;
}

const streamGets = () => server.requests.filter((r) => r.path.startsWith("/api/events/stream"));

const message = (seq, extra = {}) => ({
  event_id: `m${seq}-${Math.random()}`,
  conversation_id: "c1",
  seq,
  message: { id: `id${seq}`, conversation_id: "c1", sender_id: "2", body: `#${seq}`, seq, client_id: null },
  ...extra,
});

describe("the event-stream parser", () => {
  test("events split over chunks, CRLF, comments and multi-line data", () => {
    const got = [];
    let comments = 0;
    const parser = new EventStreamParser((event, data, id) => got.push([event, data, id]), () => comments++);
    parser.feed("retry: 1000\n\nevent: mess");
    parser.feed("age\r\nid: x1\r\ndata: {\"a\":1}\r\n\r\n: ping\n\n");
    parser.feed("data: one\ndata: two\n\n");
    assert.deepEqual(got, [
      ["message", '{"a":1}', "x1"],
      ["message", "one\ntwo", null],
    ]);
    assert.equal(comments, 1);
  });
});

describe("the fallback decision", () => {
  test("2 WebSocket opens in a row failing before connected: the stream, with the same handlers", async () => {
    reset();
    const c = client({ positions: { c1: 3 } });
    const states = record(c, ["state"]);
    const got = [];
    c.on("message", (ev) => got.push(ev.seq));
    server.script.push((res) => openStream(res, [["connected", connectedFrame(), "cur-1"], ["message", message(4), "cur-2"]]));
    server.rest = (req, res) => json(res, 200, { events: [], last_seq: 3 });
    FakeSocket.last().drop(1006);
    const second = FakeSocket.last();
    await until(() => FakeSocket.last() !== second || FakeSocket.all.length > 0, 2000);
    await until(() => FakeSocket.last() !== second, 2000, "second WebSocket");
    const before = FakeSocket.all.length;
    FakeSocket.last().drop(1006);
    await until(() => c.isOpen, 3000, "open on the stream");
    assert.equal(FakeSocket.all.length, before, "no third WebSocket");
    assert.equal(c.transport, "sse");
    assert.equal(states.at(-1)[1].transport, "sse");
    assert.equal(states.at(-1)[1].state, "open");
    await until(() => got.length === 1, 2000);
    assert.deepEqual(got, [4]);
    assert.equal(c.lastEventId, "cur-2");
    const get = streamGets()[0];
    assert.equal(get.headers.authorization, "Token t");
    assert.equal(get.headers["last-event-id"], undefined);
    // No cursor: what lies between the positions and the stream's start is fetched by REST.
    await until(() => server.requests.some((r) => r.path === "/api/conversations/c1/events?after_seq=3"), 2000);
    c.close();
  });

  test("a stream that cannot connect either: the next try is a WebSocket again", async () => {
    reset();
    const c = client({ fallbackAttempts: 1 });
    server.script.push((res) => res.socket.destroy());
    const before = FakeSocket.all.length;
    FakeSocket.last().drop(1006);
    await until(() => streamGets().length === 1, 3000, "a stream GET");
    await until(() => FakeSocket.all.length > before, 3000, "a WebSocket again");
    assert.equal(c.transport, "websocket");
    // And a WebSocket failing again goes back to the stream.
    FakeSocket.last().drop(1006);
    await until(() => c.isOpen && c.transport === "sse", 3000, "on the stream");
    c.close();
  });

  test("a WebSocket closed with a code got through: no fallback", async () => {
    reset();
    const c = client({});
    for (let i = 0; i < 4; i++) {
      const socket = FakeSocket.last();
      socket.drop(1013, "retry_after_ms=5");
      await until(() => FakeSocket.last() !== socket, 2000);
    }
    assert.equal(c.transport, "websocket");
    assert.equal(streamGets().length, 0);
    c.close();
  });

  test("transport: websocket never takes the stream", async () => {
    reset();
    const c = client({ transport: "websocket" });
    for (let i = 0; i < 4; i++) {
      const socket = FakeSocket.last();
      socket.drop(1006);
      await until(() => FakeSocket.last() !== socket, 2000);
    }
    assert.equal(c.transport, "websocket");
    c.close();
  });
});

describe("on the stream", () => {
  test("Last-Event-ID resumes; a replayed event is shown once, in seq order", async () => {
    reset();
    const before = FakeSocket.all.length;
    const c = client({ transport: "sse", positions: { c1: 0 } });
    const got = [];
    c.on("message", (ev) => got.push(ev.seq));
    const m2 = message(2);
    server.script.push((res) =>
      openStream(res, [["connected", connectedFrame(), "cur-a"], ["message", message(1), "cur-b"], ["message", m2, "cur-c"], ["close", { code: 4008 }]]),
      (res) => openStream(res, [["connected", connectedFrame(), "cur-d"], ["message", m2, "cur-c"], ["message", message(3), "cur-e"]]),
    );
    server.rest = (req, res) => json(res, 200, { events: [], last_seq: 0 });
    await until(() => got.length === 3, 3000, "three messages");
    assert.deepEqual(got, [1, 2, 3]);
    assert.equal(FakeSocket.all.length, before, "no WebSocket with transport sse");
    const gets = streamGets();
    assert.equal(gets.length, 2);
    assert.equal(gets[1].headers["last-event-id"], "cur-c");
    assert.equal(c.lastEventId, "cur-e");
    c.close();
  });

  test("resync fetches that conversation by REST", async () => {
    reset();
    const c = client({ transport: "sse", positions: { c1: 1 }, lastEventId: "cur-old" });
    const got = [];
    c.on("message", (ev) => got.push(ev.seq));
    server.rest = (req, res) =>
      req.path === "/api/conversations/c1/events?after_seq=1"
        ? json(res, 200, { events: [{ type: "message", ...message(2) }, { type: "message", ...message(3) }], last_seq: 3 })
        : json(res, 404, { detail: "no" });
    server.script.push((res) => openStream(res, [["connected", connectedFrame(), "cur-1"], ["resync", { event_id: "r1", conversation_id: "c1" }, "cur-2"], ["message", message(4), "cur-3"]]));
    await until(() => got.length === 3, 3000, "caught up");
    assert.deepEqual(got, [2, 3, 4]);
    assert.equal(streamGets()[0].headers["last-event-id"], "cur-old");
    c.close();
  });

  test("a refused cursor (400): reconnect without it, catch up by REST", async () => {
    reset();
    const c = client({ transport: "sse", positions: { c1: 5 }, lastEventId: "cur-foreign" });
    server.script.push((res) => json(res, 400, { detail: "Invalid Last-Event-ID." }));
    server.rest = (req, res) => json(res, 200, { events: [], last_seq: 5 });
    await until(() => c.isOpen, 3000);
    const gets = streamGets();
    assert.equal(gets[0].headers["last-event-id"], "cur-foreign");
    assert.equal(gets[1].headers["last-event-id"], undefined);
    await until(() => server.requests.some((r) => r.path === "/api/conversations/c1/events?after_seq=5"), 2000);
    c.close();
  });

  test("503 with X-Retry-After-Ms waits the hint; close 1012 moves at once", async () => {
    reset();
    const c = client({ transport: "sse", random: () => 0.5 });
    const events = record(c, ["reconnecting"]);
    server.script.push((res) => json(res, 503, { detail: "busy" }, { "Retry-After": "1", "X-Retry-After-Ms": "40" }));
    server.script.push((res) => openStream(res, [["connected", connectedFrame(), "x"], ["close", { code: 1012 }]]));
    await until(() => events.length >= 2, 3000);
    assert.equal(events[0][1].cause, "retry_after");
    assert.equal(events[0][1].delay, 60);
    assert.equal(events[1][1].cause, "draining");
    assert.equal(events[1][1].code, 1012);
    // Open again before closing: no stream GET of this test may reach the next one.
    await until(() => c.isOpen && streamGets().length === 3, 3000);
    c.close();
  });

  test("close 4401: a fresh token from the callback opens the next stream", async () => {
    reset();
    server.script.push((res) => openStream(res, [["connected", connectedFrame(), "x"], ["close", { code: 4401 }]]));
    const c = client({ transport: "sse", token: "stale", refreshToken: () => "fresh" });
    // Only this client's requests: a stream GET of the previous test may still come in.
    const mine = () => streamGets().map((r) => r.headers.authorization).filter((a) => a !== "Token t");
    await until(() => mine().length >= 2, 3000);
    assert.deepEqual(mine().slice(0, 2), ["Token stale", "Token fresh"]);
    await until(() => c.isOpen, 3000);
    c.close();
  });

  test("every write goes through REST: a message once under its client_id, typing, read, status", async () => {
    reset();
    const c = client({ transport: "sse" });
    await until(() => c.isOpen, 3000);
    let posts = 0;
    server.rest = (req, res) => {
      if (req.path === "/api/conversations/c1/messages") {
        posts += 1;
        // The first answer is lost (a 502 from a proxy): the outbox retries with the same id.
        if (posts === 1) return json(res, 502, { detail: "bad gateway" });
        return json(res, 201, { id: "m1", conversation_id: "c1", body: req.body.body, seq: 7, client_id: req.body.client_id });
      }
      if (req.path === "/api/messages/read") return json(res, 200, { seq: 8, read_at: "now" });
      return json(res, 200, { status: "away", user_id: "1", updated_at: "now" });
    };
    const stored = await c.sendMessage("c1", "hello", { clientId: "k-1" });
    assert.equal(stored.seq, 7);
    const messagePosts = server.requests.filter((r) => r.path === "/api/conversations/c1/messages");
    assert.deepEqual(messagePosts.map((r) => r.body), [{ body: "hello", client_id: "k-1" }, { body: "hello", client_id: "k-1" }]);
    assert.equal((await c.typing("c1", true)).via, "rest");
    assert.equal((await c.markRead("c1", ["m1"])).via, "rest");
    assert.equal((await c.setStatus("away")).via, "rest");
    const paths = server.requests.map((r) => `${r.method} ${r.path}`);
    for (const want of ["POST /api/conversations/c1/typing", "POST /api/messages/read", "POST /api/user/status"]) {
      assert.ok(paths.includes(want), want);
    }
    c.close();
  });
});

describe("back to a WebSocket", () => {
  test("after websocketRetryInterval a WebSocket that connects replaces the stream", async () => {
    reset();
    const c = client({ websocketRetryInterval: 50, fallbackAttempts: 1 });
    const states = record(c, ["state"]);
    FakeSocket.last().drop(1006);
    await until(() => c.isOpen && c.transport === "sse", 3000, "on the stream");
    const onStream = FakeSocket.all.length;
    await until(() => FakeSocket.all.length > onStream, 3000, "a probe WebSocket");
    const probe = FakeSocket.last();
    probe.push(connectedFrame());
    assert.equal(probe.closedByClient, 1000);
    await until(() => FakeSocket.all.length > onStream + 1, 3000, "the WebSocket reconnect");
    FakeSocket.last().push(connectedFrame());
    await until(() => c.isOpen && c.transport === "websocket", 2000);
    assert.equal(states.at(-1)[1].transport, "websocket");
    // The stream was ended by the client.
    await until(() => server.streams.every((res) => res.ended), 2000);
    c.close();
  });
});
