// Exactly once and in order, against scripted sockets: the cases a live cluster produces only
// by chance.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { RealtimeClient } from "../dist/client.js";
import { FakeSocket, connectedFrame, until } from "./support.mjs";

const clients = [];
after(() => clients.forEach((c) => c.close()));

const messageFrame = (seq, extra = {}) => ({
  type: "message",
  event_id: `e-${seq}-${Math.random()}`,
  seq,
  conversation_id: "c1",
  message: { id: `m${seq}`, conversation_id: "c1", sender_id: "2", body: `#${seq}`, seq, client_id: null, ...extra },
});

test("our own message held behind a gap, then acked, is not handed out as someone else's", async () => {
  const client = new RealtimeClient({
    url: "ws://x/ws/",
    token: "t",
    WebSocket: FakeSocket,
    positions: { c1: 1 },
    gapTimeout: 60_000,
  });
  clients.push(client);
  const socket = FakeSocket.last();
  socket.push(connectedFrame({ user_id: "1" }));
  socket.push({ type: "ack", ref: socket.sent[0].ref, conversations: { c1: { recovered: true, seq: 1 } } });
  await until(() => client.resuming === null);
  const events = [];
  client.on("message", (ev) => events.push(ev.seq));
  const sent = client.sendMessage("c1", "mine");
  const frame = socket.sent.at(-1);
  // Our message (seq 3) reaches the socket before seq 2 (it was sent through REST, say), then
  // its ack comes, then the gap fills.
  socket.push(messageFrame(3, { sender_id: "1", body: "mine", client_id: frame.client_id }));
  const stored = { id: "m3", conversation_id: "c1", sender_id: "1", body: "mine", seq: 3, client_id: frame.client_id };
  socket.push({ type: "ack", ref: frame.ref, message: stored });
  assert.equal((await sent).seq, 3);
  socket.push(messageFrame(2));
  socket.push(messageFrame(4));
  assert.deepEqual(events, [2, 4]);
  assert.deepEqual(client.positions, { c1: 4 });
});
