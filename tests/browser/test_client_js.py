"""The built client package (clients/js, copied to static/realtime/) in real Chromium,
against a scripted fake WebSocket and fetch.

The module is served by Playwright's request routing from the repository's static/ folder,
so these tests need no server; they check the logic a live server cannot steer on demand
(ref matching, de-duplication, which close codes end the reconnect loop).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from scripts.procs import REPO_ROOT

pytestmark = pytest.mark.browser

# Requests to this origin never leave the browser: the route handler answers them.
ORIGIN = "http://127.0.0.1:9"

HARNESS = """
<!doctype html><meta charset="utf-8"><title>client.js harness</title>
<script type="module">
  import * as mod from "/static/realtime/client.js";

  // A WebSocket double: records what the client sends, lets the test push frames and closes.
  class FakeSocket {
    static all = [];
    constructor(url) { this.url = url; this.sent = []; FakeSocket.all.push(this); }
    send(data) { this.sent.push(JSON.parse(data)); }
    close(code = 1000) { this.closedByClient = code; }
    push(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
    drop(code, reason = "") { this.onclose?.({ code, reason }); }
  }
  const calls = [];
  // Tests may replace `harness.answer(url, init)` -> {status, body} (a throw is a network error).
  const harness = {
    answer: () => ({ status: 200, body: { conversation_id: "c1", is_typing: true } }),
  };
  async function fakeFetch(url, init) {
    calls.push({ url, method: init.method, headers: init.headers, body: init.body });
    const { status, body } = await harness.answer(url, init);
    return new Response(JSON.stringify(body), { status });
  }
  const connectedFrame = (extra = {}) => ({
    type: "connected", event_id: "e-connected-" + FakeSocket.all.length, connection_id: "k1",
    instance_id: "web-a", user_id: "1", heartbeat_interval: 20, ...extra,
  });
  const tick = (ms) => new Promise((r) => setTimeout(r, ms));
  // Polls `check()` until it is truthy (or throws after `ms`): no sleep-and-assert.
  async function until(check, ms = 2000) {
    const deadline = Date.now() + ms;
    for (;;) {
      const value = check();
      if (value) return value;
      if (Date.now() > deadline) throw new Error("until: timed out: " + check);
      await tick(5);
    }
  }
  // A durable `message` event as the server sends it.
  const messageFrame = (conv, seq, extra = {}) => ({
    type: "message", event_id: `e-${conv}-${seq}`, seq, conversation_id: conv,
    message: { id: `m-${conv}-${seq}`, conversation_id: conv, sender_id: "2", body: `#${seq}`,
               seq, client_id: null, ...extra },
  });
  Object.assign(harness, { mod, FakeSocket, calls, fakeFetch, connectedFrame, tick, until,
                           messageFrame });
  window.harness = harness;
  window.harnessReady = true;
</script>
"""


@pytest.fixture(scope="module")
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    static_root = REPO_ROOT / "static"

    def serve(route: Any) -> None:
        path = route.request.url.removeprefix(ORIGIN)
        if path == "/harness":
            route.fulfill(status=200, content_type="text/html", body=HARNESS)
        elif path.startswith("/static/"):
            route.fulfill(
                status=200,
                content_type="text/javascript",
                path=str(static_root / path.removeprefix("/static/")),
            )
        else:
            route.fulfill(status=404, body="")

    context.route(f"{ORIGIN}/**", serve)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{ORIGIN}/harness")
    page.wait_for_function("window.harnessReady === true")
    yield page
    context.close()
    assert not errors, errors


def test_acks_and_errors_settle_the_send_with_the_same_ref(page: Any) -> None:
    result = page.evaluate(
        """async () => {
          const { mod, FakeSocket, connectedFrame } = window.harness;
          const client = new mod.RealtimeClient({ url: "ws://x/ws/", token: "t k",
            WebSocket: FakeSocket, ackTimeout: 2000 });
          const socket = FakeSocket.all.at(-1);
          socket.push(connectedFrame());
          const first = client.send("typing", { conversation_id: "c1", is_typing: true });
          const second = client.markRead("c1", ["m1"]).catch((e) => e);
          const [ref1, ref2] = socket.sent.map((f) => f.ref);
          // Replies out of order: each promise must get its own.
          socket.push({ type: "error", ref: ref2, code: "not_participant", message: "no" });
          socket.push({ type: "ack", ref: ref1, is_typing: true });
          const ack = await first;
          const err = await second;
          client.close();
          return { url: socket.url, refsDiffer: ref1 !== ref2, ackRef: ack.ref, ref1,
                   errCode: err.code, errName: err.name, frames: socket.sent.map((f) => f.type),
                   state: client.state };
        }"""
    )
    assert result["url"] == "ws://x/ws/?token=t%20k"
    assert result["refsDiffer"]
    assert result["ackRef"] == result["ref1"]
    assert (result["errName"], result["errCode"]) == ("RealtimeError", "not_participant")
    assert result["frames"] == ["typing", "read"]
    assert result["state"] == "closed"


def test_events_are_delivered_once_per_event_id_within_a_bounded_memory(page: Any) -> None:
    result = page.evaluate(
        """async () => {
          const { mod, FakeSocket, connectedFrame } = window.harness;
          const client = new mod.RealtimeClient({ url: "ws://x/ws/", token: "t",
            WebSocket: FakeSocket, dedupSize: 3 });
          const socket = FakeSocket.all.at(-1);
          socket.push(connectedFrame());
          const got = [];
          client.on("message", (ev) => got.push(ev.event_id));
          const frame = (id) => ({ type: "message", event_id: id, conversation_id: "c1",
                                   message: { id: "m-" + id, body: "hi" } });
          for (const id of ["a", "b", "a", "c", "b"]) socket.push(frame(id));
          const before = got.length;
          // Remembering only three ids: after d, e, f, "a" is forgotten and passes again.
          for (const id of ["d", "e", "f", "a"]) socket.push(frame(id));
          client.close();
          return { got, before, remembered: client.seen.size };
        }"""
    )
    assert result["before"] == 3
    assert result["got"] == ["a", "b", "c", "d", "e", "f", "a"]
    assert result["remembered"] == 3


def test_reconnects_after_a_drop_or_1012_but_never_after_4401(page: Any) -> None:
    result = page.evaluate(
        """async () => {
          const { mod, FakeSocket, connectedFrame, tick } = window.harness;
          const backoff = { initial: 20, max: 40 };
          const states = [];
          const opened = () => FakeSocket.all.length;

          const client = new mod.RealtimeClient({ url: "ws://x/ws/", token: "t",
            WebSocket: FakeSocket, backoff });
          client.on("state", (s) => states.push(s.state));
          FakeSocket.all.at(-1).push(connectedFrame());
          const start = opened();
          FakeSocket.all.at(-1).drop(1006);
          await tick(120);
          const afterDrop = opened() - start;
          FakeSocket.all.at(-1).push(connectedFrame());
          FakeSocket.all.at(-1).drop(1012, "draining");
          await tick(120);
          const after1012 = opened() - start;
          FakeSocket.all.at(-1).push(connectedFrame({ instance_id: "web-b" }));
          const instance = client.instanceId;
          client.close();

          const refused = new mod.RealtimeClient({ url: "ws://x/ws/", token: "bad",
            WebSocket: FakeSocket, backoff });
          const errors = [];
          refused.on("error", (e) => errors.push(e.code));
          const beforeRefusal = opened();
          FakeSocket.all.at(-1).drop(4401, "unauthorized");
          await tick(150);
          return { afterDrop, after1012, instance, states,
                   refusedSockets: opened() - beforeRefusal, refusedState: refused.state, errors };
        }"""
    )
    assert result["afterDrop"] == 1
    assert result["after1012"] == 2
    assert result["instance"] == "web-b"
    assert result["states"] == [
        "open", "reconnecting", "open", "reconnecting", "open", "closed"
    ]  # fmt: skip
    assert result["refusedSockets"] == 0
    assert result["refusedState"] == "closed"
    assert result["errors"] == ["unauthorized"]


def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap(page: Any) -> None:
    delays = page.evaluate(
        """() => {
          const { backoffDelay } = window.harness.mod;
          const opts = { initial: 100, max: 1000, factor: 2 };
          return [0, 1, 2, 3, 4, 10].map((n) => [
            backoffDelay(n, opts, () => 0), backoffDelay(n, opts, () => 1)]);
        }"""
    )
    # Full jitter: anywhere from 0 up to the nominal delay, which doubles up to the cap.
    assert delays == [[0, 100], [0, 200], [0, 400], [0, 800], [0, 1000], [0, 1000]]


def test_typing_goes_through_rest_while_the_socket_is_down(page: Any) -> None:
    result = page.evaluate(
        """async () => {
          const { mod, FakeSocket, calls, fakeFetch } = window.harness;
          const client = new mod.RealtimeClient({ url: "ws://x/ws/", token: "k1",
            apiBase: "http://api", WebSocket: FakeSocket, fetch: fakeFetch });
          // Never connected: the socket is still "connecting".
          const ack = await client.typing("c1", true);
          const status = await client.send("ping").catch((e) => e.code);
          client.close();
          return { ack, call: calls.at(-1), status };
        }"""
    )
    assert result["ack"]["via"] == "rest"
    assert result["call"]["url"] == "http://api/api/conversations/c1/typing"
    assert result["call"]["method"] == "POST"
    assert result["call"]["headers"]["Authorization"] == "Token k1"
    assert result["call"]["body"] == '{"is_typing":true}'
    assert result["status"] == "not_connected"


def test_pings_at_the_interval_the_server_announces(page: Any) -> None:
    pings = page.evaluate(
        """async () => {
          const { mod, FakeSocket, connectedFrame, tick } = window.harness;
          const client = new mod.RealtimeClient({ url: "ws://x/ws/", token: "t",
            WebSocket: FakeSocket });
          const socket = FakeSocket.all.at(-1);
          socket.push(connectedFrame({ heartbeat_interval: 0.1 }));
          await tick(350);
          client.close();
          return socket.sent.filter((f) => f.type === "ping").length;
        }"""
    )
    # Three intervals of 100 ms fit in 350 ms; a default 20 s interval would give none.
    assert 2 <= pings <= 4


def test_resumes_after_every_reconnect_and_delivers_each_seq_once_in_order(page: Any) -> None:
    result = page.evaluate(
        """async () => {
          const { mod, FakeSocket, connectedFrame, messageFrame, until } = window.harness;
          const client = new mod.RealtimeClient({ url: "ws://x/ws/", token: "t",
            WebSocket: FakeSocket, backoff: { initial: 10, max: 20 }, positions: { c1: 4 } });
          const got = [];
          client.on("message", (ev) => got.push(`${ev.conversation_id}:${ev.seq}`));
          const resumed = [];
          client.on("resumed", (ev) => resumed.push(ev.conversations));
          let socket = FakeSocket.all.at(-1);
          socket.push(connectedFrame());
          // The first connect resumes too: the app's positions came from REST before it.
          const first = socket.sent[0];
          socket.push(messageFrame("c1", 5));
          socket.push({ type: "ack", ref: first.ref,
                        conversations: { c1: { recovered: true, seq: 5 } } });
          await until(() => resumed.length === 1);
          socket.push(messageFrame("c2", 7)); // a conversation nobody told the client about
          socket.drop(1006);

          await until(() => FakeSocket.all.at(-1) !== socket);
          socket = FakeSocket.all.at(-1);
          socket.push(connectedFrame());
          const second = socket.sent[0];
          // Live events that came before the resume frame, then the replay: out of order and
          // overlapping. Each seq is shown once, in order.
          socket.push(messageFrame("c1", 7, { body: "live" }));
          socket.push(messageFrame("c1", 6));
          socket.push({ ...messageFrame("c1", 7), event_id: "another-id" });
          socket.push(messageFrame("c2", 8));
          socket.push({ type: "ack", ref: second.ref,
            conversations: { c1: { recovered: true, seq: 7 }, c2: { recovered: true, seq: 8 } } });
          socket.push(messageFrame("c1", 5, { body: "old" }));
          await until(() => resumed.length === 2);
          const positions = client.positions;
          client.close();
          return { first, second, got, positions, resumed: resumed.length };
        }"""
    )
    assert result["first"]["type"] == "resume"
    assert result["first"]["positions"] == {"c1": 4}
    assert result["second"]["type"] == "resume"
    assert result["second"]["positions"] == {"c1": 5, "c2": 7}
    assert result["got"] == ["c1:5", "c2:7", "c1:6", "c1:7", "c2:8"]
    assert result["positions"] == {"c1": 7, "c2": 8}
    assert result["resumed"] == 2


def test_a_gap_that_does_not_fill_itself_is_fetched_by_rest(page: Any) -> None:
    result = page.evaluate(
        """async () => {
          const h = window.harness;
          const { mod, FakeSocket, connectedFrame, messageFrame, until, calls } = h;
          calls.length = 0;
          h.answer = (url) => ({ status: 200,
            body: { events: [messageFrame("c1", 3), messageFrame("c1", 4)], last_seq: 5 } });
          const client = new mod.RealtimeClient({ url: "ws://x/ws/", token: "t", apiBase: "http://api",
            WebSocket: FakeSocket, fetch: h.fakeFetch, gapTimeout: 50 });
          const socket = FakeSocket.all.at(-1);
          socket.push(connectedFrame());
          const got = [];
          client.on("message", (ev) => got.push(ev.seq));
          socket.push(messageFrame("c1", 2));
          socket.push(messageFrame("c1", 5)); // 3 and 4 never come live
          const heldBack = [...got];
          await until(() => got.length === 4);
          const url = calls.at(-1).url;
          client.close();
          return { heldBack, got, url, fetches: calls.length };
        }"""
    )
    assert result["heldBack"] == [2]
    assert result["got"] == [2, 3, 4, 5]
    assert result["url"] == "http://api/api/conversations/c1/events?after_seq=2"
    assert result["fetches"] == 1


def test_an_unrecovered_resume_refetches_by_rest_or_resets(page: Any) -> None:
    result = page.evaluate(
        """async () => {
          const h = window.harness;
          const { mod, FakeSocket, connectedFrame, messageFrame, until, calls } = h;
          calls.length = 0;
          // Two pages for c1 (the server pages at RESUME_MAX_EVENTS); c9 is not ours any more.
          h.answer = (url) => {
            if (url.includes("/c8/")) return { status: 403, body: { detail: "no" } };
            const after = Number(new URL(url).searchParams.get("after_seq"));
            const events = after < 12 ? [messageFrame("c1", 11), messageFrame("c1", 12)]
                                       : [messageFrame("c1", 13)];
            return { status: 200, body: { events, last_seq: 13 } };
          };
          const client = new mod.RealtimeClient({ url: "ws://x/ws/", token: "t", apiBase: "http://api",
            WebSocket: FakeSocket, fetch: h.fakeFetch, refetchLimit: 50,
            positions: { c1: 10, c8: 2, c9: 3, cbig: 1 } });
          const got = [], resets = [];
          client.on("message", (ev) => got.push(ev.seq));
          client.on("reset", (ev) => resets.push(ev));
          const socket = FakeSocket.all.at(-1);
          socket.push(connectedFrame());
          socket.push({ type: "ack", ref: socket.sent[0].ref, conversations: {
            c1: { recovered: false, seq: 13 }, c9: { recovered: false, seq: null },
            c8: { recovered: false, seq: 9 }, // removed between the resume and the refetch
            cbig: { recovered: false, seq: 5000 } } });
          await until(() => got.length === 3 && resets.length === 3);
          const positions = client.positions;
          client.close();
          return { got, resets, positions, urls: calls.map((c) => c.url) };
        }"""
    )
    assert result["got"] == [11, 12, 13]
    assert sorted(result["resets"], key=lambda r: r["conversation_id"]) == [
        {"conversation_id": "c8", "reason": "not_participant", "seq": None},
        {"conversation_id": "c9", "reason": "not_participant", "seq": None},
        {"conversation_id": "cbig", "reason": "too_far_behind", "seq": 5000},
    ]
    # c8 and c9 are forgotten: no position for them in the next resume.
    assert result["positions"] == {"c1": 13, "cbig": 5000}
    assert sorted(result["urls"]) == [
        "http://api/api/conversations/c1/events?after_seq=10",
        "http://api/api/conversations/c1/events?after_seq=12",
        "http://api/api/conversations/c8/events?after_seq=2",
    ]


def test_an_unacknowledged_message_is_sent_again_with_its_client_id(page: Any) -> None:
    result = page.evaluate(
        """async () => {
          const { mod, FakeSocket, connectedFrame, messageFrame, until } = window.harness;
          const client = new mod.RealtimeClient({ url: "ws://x/ws/", token: "t",
            WebSocket: FakeSocket, restFallback: false, backoff: { initial: 10, max: 20 },
            positions: { c1: 1 } });
          let socket = FakeSocket.all.at(-1);
          socket.push(connectedFrame());
          socket.push({ type: "ack", ref: socket.sent[0].ref, conversations: {} });
          await until(() => client.resuming === null);
          const first = client.sendMessage("c1", "hello");
          const second = client.sendMessage("c1", "again");
          const sentFirst = socket.sent.filter((f) => f.type === "message");
          socket.drop(1006); // no ack for either

          await until(() => FakeSocket.all.at(-1) !== socket);
          socket = FakeSocket.all.at(-1);
          socket.push(connectedFrame());
          const resume = socket.sent[0];
          const beforeAck = socket.sent.filter((f) => f.type === "message").length;
          // "hello" was stored before the drop: the replay holds it, so it is not sent again.
          const [helloId, againId] = sentFirst.map((f) => f.client_id);
          socket.push(messageFrame("c1", 2, { sender_id: "1", body: "hello", client_id: helloId }));
          socket.push({ type: "ack", ref: resume.ref,
                        conversations: { c1: { recovered: true, seq: 2 } } });
          await until(() => client.resuming === null);
          await window.harness.tick(30); // room for a (wrong) resend of "hello" too
          const resent = socket.sent.filter((f) => f.type === "message");
          socket.push({ type: "ack", ref: resent[0].ref, message: { id: "m3", conversation_id: "c1",
            sender_id: "1", body: "again", seq: 3, client_id: againId } });
          const stored = await Promise.all([first, second]);
          const events = [];
          client.on("message", (ev) => events.push(ev.seq));
          socket.push(messageFrame("c1", 3, { sender_id: "1", client_id: againId }));
          socket.push(messageFrame("c1", 4));
          const positions = client.positions;
          client.close();
          return { sentFirst, beforeAck, resent, stored, events, positions,
                   pending: client.pendingMessages, distinct: helloId !== againId };
        }"""
    )
    assert [f["body"] for f in result["sentFirst"]] == ["hello", "again"]
    assert result["distinct"] and all(f["client_id"] for f in result["sentFirst"])
    assert result["beforeAck"] == 0  # nothing is resent before the resume is answered
    assert [(f["body"], f["client_id"]) for f in result["resent"]] == [
        ("again", result["sentFirst"][1]["client_id"])
    ]
    assert [m["seq"] for m in result["stored"]] == [2, 3]
    # Its own ack took seq 3: the live copy of it is not shown as someone else's message.
    assert result["events"] == [4]
    assert result["positions"] == {"c1": 4}
    assert result["pending"] == 0


def test_a_message_written_offline_goes_out_once_the_network_is_back(page: Any) -> None:
    result = page.evaluate(
        """async () => {
          const h = window.harness;
          const { mod, FakeSocket, connectedFrame, until, calls } = h;
          calls.length = 0;
          let online = false;
          h.answer = (url, init) => {
            if (!online) throw new TypeError("Failed to fetch");
            return { status: 201, body: { id: "m1", conversation_id: "c1", sender_id: "1",
              body: "offline", seq: 1, client_id: JSON.parse(init.body).client_id } };
          };
          const client = new mod.RealtimeClient({ url: "ws://x/ws/", token: "t", apiBase: "http://api",
            WebSocket: FakeSocket, fetch: h.fakeFetch, backoff: { initial: 20, max: 40 } });
          // Never connected; REST fails too (offline): the message waits and is tried again.
          const sent = client.sendMessage("c1", "offline");
          await until(() => calls.length >= 2);
          online = true;
          const message = await sent;
          const ids = new Set(calls.map((c) => JSON.parse(c.body).client_id));
          const retries = calls.length;
          client.close();
          return { message, ids: ids.size, retries, body: JSON.parse(calls[0].body) };
        }"""
    )
    assert result["message"]["seq"] == 1
    assert result["retries"] >= 3
    assert result["ids"] == 1  # every try carried the same client_id
    assert result["body"]["body"] == "offline"


def test_a_refused_message_rejects_and_leaves_the_outbox(page: Any) -> None:
    result = page.evaluate(
        """async () => {
          const { mod, FakeSocket, connectedFrame } = window.harness;
          const client = new mod.RealtimeClient({ url: "ws://x/ws/", token: "t",
            WebSocket: FakeSocket });
          const socket = FakeSocket.all.at(-1);
          socket.push(connectedFrame());
          const sent = client.sendMessage("c1", "x").catch((e) => e.code);
          const frame = socket.sent.at(-1);
          socket.push({ type: "error", ref: frame.ref, code: "not_participant", message: "no" });
          const code = await sent;
          const pending = client.pendingMessages;
          client.close();
          return { code, pending };
        }"""
    )
    assert result == {"code": "not_participant", "pending": 0}


def test_slow_consumer_and_draining_reconnect_and_resume_but_4401_signs_out(page: Any) -> None:
    result = page.evaluate(
        """async () => {
          const { mod, FakeSocket, connectedFrame, messageFrame, until } = window.harness;
          const client = new mod.RealtimeClient({ url: "ws://x/ws/", token: "t",
            WebSocket: FakeSocket, backoff: { initial: 10, max: 20 } });
          const states = [];
          client.on("state", (s) => states.push([s.state, s.code ?? null, s.signedOut ?? false]));
          const resumes = [];
          let socket = FakeSocket.all.at(-1);
          socket.push(connectedFrame());
          socket.push(messageFrame("c1", 1));
          for (const code of [4008, 1012]) {
            socket.drop(code);
            await until(() => FakeSocket.all.at(-1) !== socket);
            socket = FakeSocket.all.at(-1);
            socket.push(connectedFrame());
            resumes.push(socket.sent[0]);
          }
          const pending = client.sendMessage("c1", "queued");
          socket.drop(4401, "revoked");
          const before = FakeSocket.all.length;
          await window.harness.tick(60);
          return { states, resumes, reconnects: FakeSocket.all.length - before,
                   queued: client.pendingMessages };
        }"""
    )
    assert [r["type"] for r in result["resumes"]] == ["resume", "resume"]
    assert all(r["positions"] == {"c1": 1} for r in result["resumes"])
    assert result["reconnects"] == 0
    assert result["states"][-1] == ["closed", 4401, True]
    assert ["reconnecting", 4008, False] in result["states"]
    assert ["reconnecting", 1012, False] in result["states"]
    # Kept for a fresh token (setToken + connect), not silently dropped.
    assert result["queued"] == 1


def test_set_token_swaps_the_token_on_the_open_socket_and_for_what_follows(page: Any) -> None:
    result = page.evaluate(
        """async () => {
          const h = window.harness;
          const { mod, FakeSocket, connectedFrame, calls } = h;
          calls.length = 0;
          h.answer = () => ({ status: 200, body: {} });
          const client = new mod.RealtimeClient({ url: "ws://x/ws/", token: "old", apiBase: "http://api",
            WebSocket: FakeSocket, fetch: h.fakeFetch });
          const socket = FakeSocket.all.at(-1);
          socket.push(connectedFrame());
          // A token the server refuses changes nothing.
          const refused = client.setToken("bad").catch((e) => e.code);
          socket.push({ type: "error", ref: socket.sent.at(-1).ref, code: "invalid_payload",
                        message: "The token is revoked." });
          const refusal = await refused;
          const kept = client.token;
          const acked = client.setToken("new");
          const frame = socket.sent.at(-1);
          socket.push({ type: "ack", ref: frame.ref });
          await acked;
          await client.request("GET", "/api/connections/info");
          socket.drop(1006);
          await h.until(() => FakeSocket.all.at(-1) !== socket, 3000);
          const url = FakeSocket.all.at(-1).url;
          client.close();
          return { frame, auth: calls.at(-1).headers.Authorization, url, refusal, kept };
        }"""
    )
    assert (result["refusal"], result["kept"]) == ("invalid_payload", "old")
    assert result["frame"]["type"] == "auth" and result["frame"]["token"] == "new"
    assert result["auth"] == "Token new"
    assert result["url"] == "ws://x/ws/?token=new"


def test_the_users_own_removal_is_the_last_event_of_that_conversation(page: Any) -> None:
    result = page.evaluate(
        """async () => {
          const { mod, FakeSocket, connectedFrame, messageFrame } = window.harness;
          const client = new mod.RealtimeClient({ url: "ws://x/ws/", token: "t",
            WebSocket: FakeSocket });
          const socket = FakeSocket.all.at(-1);
          socket.push(connectedFrame({ user_id: "1" }));
          const got = [];
          client.on("member", (ev) => got.push(`${ev.action} ${ev.user_id} @${ev.seq}`));
          const member = (seq, action, user) => ({ type: "member", event_id: `mb${seq}`, seq,
            conversation_id: "c1", user_id: user, action, by: "2" });
          socket.push(member(1, "added", "3"));
          socket.push(member(2, "removed", "1"));
          const positions = client.positions;
          client.close();
          return { got, positions };
        }"""
    )
    assert result["got"] == ["added 3 @1", "removed 1 @2"]
    assert result["positions"] == {}


def test_own_acks_keep_positions_contiguous_and_track_never_moves_a_followed_one(
    page: Any,
) -> None:
    result = page.evaluate(
        """async () => {
          const { mod, FakeSocket, connectedFrame, messageFrame, until } = window.harness;
          const client = new mod.RealtimeClient({ url: "ws://x/ws/", token: "t",
            WebSocket: FakeSocket, gapTimeout: 60000 });
          const socket = FakeSocket.all.at(-1);
          socket.push(connectedFrame());
          const got = [];
          client.on("message", (ev) => got.push(ev.seq));
          client.on("read", (ev) => got.push(`read ${ev.seq}`));
          client.track("c1", 3);
          client.track("c1", 9); // followed already: a REST list must not skip a replay
          const read = client.markRead("c1", ["m-c1-3"]);
          socket.push({ type: "ack", ref: socket.sent.at(-1).ref, conversation_id: "c1",
                        message_ids: ["m-c1-3"], read_at: "2026-12-01T08:00:00+00:00", seq: 4 });
          await read;
          // Our own read receipt was seq 4 (not sent back to us): 5 follows without a gap.
          socket.push(messageFrame("c1", 5));
          const sent = client.sendMessage("c1", "mine");
          await until(() => socket.sent.at(-1).type === "message");
          socket.push({ type: "ack", ref: socket.sent.at(-1).ref, message: { id: "m6",
            conversation_id: "c1", sender_id: "1", body: "mine", seq: 6,
            client_id: socket.sent.at(-1).client_id } });
          await sent;
          socket.push(messageFrame("c1", 7));
          client.setPosition("c1", 8); // forward: the app has 8 by REST
          socket.push(messageFrame("c1", 8));
          socket.push(messageFrame("c1", 9));
          const positions = client.positions;
          client.close();
          return { got, positions };
        }"""
    )
    assert result["got"] == [5, 7, 9]
    assert result["positions"] == {"c1": 9}
