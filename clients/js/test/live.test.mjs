// Against live instances: two Daphne processes over Redis and a database, started by the
// project's test suite (tests/jsclient/test_package.py), which passes their URLs, the demo
// users and a control channel for faults in the environment. Without them, this file skips.
//
// Each scenario has three clients, each on its own failover list, write into one conversation
// while a fault strikes; then every client's view is counted against the committed event log:
// every event once (its own messages through sendMessage's promise, the others' as events),
// none twice, and every message sent stored once.
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { WebSocket } from "ws";

import { RealtimeClient } from "../dist/client.js";
import { until } from "./support.mjs";

const env = process.env;
const live = Boolean(env.RT_LIVE_URLS);
const urls = live ? JSON.parse(env.RT_LIVE_URLS) : {};
const users = live ? JSON.parse(env.RT_LIVE_USERS) : {};
const conversation = env.RT_LIVE_CONVERSATION ?? "";
const instanceIds = live ? JSON.parse(env.RT_LIVE_INSTANCE_IDS) : {};
const SENDS_PER_CLIENT = Number(env.RT_LIVE_SENDS ?? 24);

async function fault(action, instance = null) {
  const response = await fetch(`${env.RT_LIVE_CONTROL}/fault`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ action, instance }),
  });
  assert.equal(response.status, 200, `fault ${action} ${instance}: ${await response.text()}`);
}

const opened = [];
after(() => opened.forEach((c) => c.close()));

/** A client of `user` whose failover list starts at `first` ("a" or "b"). */
function clientOf(user, first, options = {}) {
  const order = first === "a" ? [urls.a, urls.b] : [urls.b, urls.a];
  const client = new RealtimeClient({
    url: order,
    token: users[user].token,
    WebSocket,
    autoConnect: false,
    backoff: { initial: 100, max: 1000 },
    // The suite's instances ping every half second: a dead one is noticed within seconds.
    heartbeatInterval: 1,
    ...options,
  });
  opened.push(client);
  const view = { user, client, events: [], own: [], reconnects: 0, causes: [] };
  client.on("message", (ev) => view.events.push(ev.seq));
  client.on("read", (ev) => view.events.push(ev.seq));
  client.on("member", (ev) => view.events.push(ev.seq));
  client.on("reconnecting", (ev) => {
    view.reconnects += 1;
    view.causes.push(ev.cause);
  });
  return view;
}

async function lastSeq(client) {
  const body = await client.request("GET", `/api/conversations/${conversation}`);
  return body.last_seq;
}

/** Every durable event of the conversation after `from`, read by REST page after page. */
async function committedAfter(client, from) {
  const events = [];
  let position = from;
  for (let page = 0; page < 100; page++) {
    const body = await client.request("GET", `/api/conversations/${conversation}/events?after_seq=${position}`);
    events.push(...body.events);
    if (!body.events.length || body.events.at(-1).seq >= body.last_seq) break;
    position = body.events.at(-1).seq;
  }
  return events;
}

async function openAll(views) {
  const start = await lastSeq(views[0].client);
  for (const view of views) {
    view.client.track(conversation, start);
    view.client.connect();
  }
  await until(() => views.every((v) => v.client.isOpen), 20_000, "every client open");
  return start;
}

/** Each client sends SENDS_PER_CLIENT messages, one every 100 ms; `midway` runs at a third. */
async function writeThrough(views, midway) {
  const sent = views.map(() => []);
  let faulted = null;
  for (let i = 0; i < SENDS_PER_CLIENT; i++) {
    if (i === Math.floor(SENDS_PER_CLIENT / 3)) faulted = midway();
    views.forEach((view, k) => {
      const body = `${view.user} #${i} ${Date.now()}`;
      sent[k].push(view.client.sendMessage(conversation, body).then((m) => (view.own.push(m.seq), m)));
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await faulted;
  return Promise.all(sent.map((list) => Promise.all(list)));
}

/** Every client has every committed event after `start` exactly once; each send stored once. */
async function assertExactlyOnce(views, start, stored) {
  const reader = views.find((v) => v.client.isOpen) ?? views[0];
  const log = await committedAfter(reader.client, start);
  const last = log.at(-1)?.seq ?? start;
  await until(
    () => views.every((v) => (v.client.positions[conversation] ?? 0) >= last),
    30_000,
    "every client caught up with the log",
  );
  const expected = log.map((e) => e.seq);
  assert.deepEqual(expected, Array.from({ length: last - start }, (_, i) => start + 1 + i), "log has gaps");
  const report = [];
  for (const view of views) {
    const got = [...view.events, ...view.own].sort((x, y) => x - y);
    const counts = new Map();
    for (const seq of got) counts.set(seq, (counts.get(seq) ?? 0) + 1);
    const lost = expected.filter((seq) => !counts.has(seq));
    const duplicated = [...counts].filter(([, n]) => n > 1).map(([seq]) => seq);
    const foreign = got.filter((seq) => seq <= start || seq > last);
    const where = duplicated.map((seq) => ({
      seq,
      asEvent: view.events.filter((s) => s === seq).length,
      asOwn: view.own.filter((s) => s === seq).length,
    }));
    report.push({ user: view.user, got: got.length, lost, duplicated, where, foreign, reconnects: view.reconnects, causes: view.causes });
    // Events reach a handler in seq order.
    assert.deepEqual(view.events, [...view.events].sort((x, y) => x - y), `${view.user}: out of order`);
  }
  console.log(JSON.stringify({ start, last, report }));
  for (const r of report) {
    assert.deepEqual([r.lost, r.duplicated, r.foreign], [[], [], []], `${r.user}: ${JSON.stringify(r)}`);
  }
  // Every message sent was stored exactly once, whatever number of tries it took.
  const byClientId = new Map();
  for (const event of log) {
    if (event.type !== "message") continue;
    const id = event.message.client_id;
    byClientId.set(id, (byClientId.get(id) ?? 0) + 1);
  }
  const sent = stored.flat();
  assert.equal(sent.length, views.length * SENDS_PER_CLIENT);
  for (const message of sent) assert.equal(byClientId.get(message.client_id), 1, `stored ${message.client_id}`);
}

describe("live cluster", { skip: live ? false : "no live cluster (RT_LIVE_URLS unset)" }, () => {
  test("messages flow across instances", async () => {
    const alice = clientOf("alice", "a");
    const bob = clientOf("bob", "b");
    await openAll([alice, bob]);
    assert.equal(alice.client.instanceId, instanceIds.a);
    assert.equal(bob.client.instanceId, instanceIds.b);
    const got = [];
    bob.client.on("message", (ev) => got.push(ev.message.body));
    const message = await alice.client.sendMessage(conversation, "hello from a");
    await until(() => got.includes("hello from a"), 10_000, "bob's copy");
    assert.equal(message.body, "hello from a");
    alice.client.close();
    bob.client.close();
  });

  test("an instance killed mid-stream: clients fail over, resume, 0 lost, 0 duplicated", async () => {
    const views = [clientOf("alice", "a"), clientOf("bob", "b"), clientOf("carol", "a")];
    const start = await openAll(views);
    const stored = await writeThrough(views, () => fault("kill", "a"));
    await assertExactlyOnce(views, start, stored);
    // Those that were on the killed instance went over to the other one and resumed there.
    for (const view of [views[0], views[2]]) {
      assert.ok(view.reconnects >= 1, `${view.user} never reconnected`);
      assert.equal(view.client.instanceId, instanceIds.b);
    }
    views.forEach((v) => v.client.close());
    await fault("restart", "a");
  });

  test("an instance drained (SIGTERM): its clients move at once, 0 lost, 0 duplicated", async () => {
    const views = [clientOf("alice", "b"), clientOf("bob", "a"), clientOf("carol", "b")];
    const start = await openAll(views);
    const stored = await writeThrough(views, () => fault("drain", "b"));
    await assertExactlyOnce(views, start, stored);
    for (const view of [views[0], views[2]]) {
      // 1012, answered within the first backoff step, to the next URL of the list.
      assert.equal(view.causes[0], "draining", `${view.user}: ${view.causes}`);
      assert.equal(view.client.instanceId, instanceIds.a);
    }
    assert.deepEqual(views[1].causes, []);
    views.forEach((v) => v.client.close());
    await fault("restart", "b");
  });

  test("Redis restarted empty mid-stream: 0 lost, 0 duplicated", async () => {
    const views = [clientOf("alice", "a"), clientOf("bob", "b"), clientOf("carol", "b")];
    const start = await openAll(views);
    const stored = await writeThrough(views, () => fault("restart_redis"));
    await assertExactlyOnce(views, start, stored);
    views.forEach((v) => v.client.close());
  });
});

// The same faults with the clients on server-sent events (the transport forced): events come
// over `GET /api/events/stream`, resumed by `Last-Event-ID`; every write goes through REST.
describe("live cluster over server-sent events", { skip: live ? false : "no live cluster (RT_LIVE_URLS unset)" }, () => {
  const sse = { transport: "sse" };

  test("an instance killed mid-stream: streams fail over, resume, 0 lost, 0 duplicated", async () => {
    const views = [clientOf("alice", "a", sse), clientOf("bob", "b", sse), clientOf("carol", "a", sse)];
    const start = await openAll(views);
    for (const view of views) assert.equal(view.client.transport, "sse");
    const stored = await writeThrough(views, () => fault("kill", "a"));
    await assertExactlyOnce(views, start, stored);
    for (const view of [views[0], views[2]]) {
      assert.ok(view.reconnects >= 1, `${view.user} never reconnected`);
      assert.equal(view.client.instanceId, instanceIds.b);
      assert.ok(view.client.lastEventId, `${view.user} kept no cursor`);
    }
    views.forEach((v) => v.client.close());
    await fault("restart", "a");
  });

  test("Redis restarted empty mid-stream: 0 lost, 0 duplicated", async () => {
    const views = [clientOf("alice", "a", sse), clientOf("bob", "b", sse), clientOf("carol", "b", sse)];
    const start = await openAll(views);
    const stored = await writeThrough(views, () => fault("restart_redis"));
    await assertExactlyOnce(views, start, stored);
    for (const view of views) assert.equal(view.client.transport, "sse");
    views.forEach((v) => v.client.close());
  });
});
