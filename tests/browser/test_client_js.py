"""static/realtime/client.js in real Chromium, against a scripted fake WebSocket and fetch.

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
  async function fakeFetch(url, init) {
    calls.push({ url, method: init.method, headers: init.headers, body: init.body });
    const body = JSON.stringify({ conversation_id: "c1", is_typing: true });
    return new Response(body, { status: 200 });
  }
  const connectedFrame = (extra = {}) => ({
    type: "connected", event_id: "e-connected-" + FakeSocket.all.length, connection_id: "k1",
    instance_id: "web-a", user_id: "1", heartbeat_interval: 20, ...extra,
  });
  window.harness = { mod, FakeSocket, calls, fakeFetch, connectedFrame,
    tick: (ms) => new Promise((r) => setTimeout(r, ms)) };
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


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap(page: Any) -> None:
    delays = page.evaluate(
        """() => {
          const { backoffDelay } = window.harness.mod;
          const opts = { initial: 100, max: 1000, factor: 2 };
          return [0, 1, 2, 3, 4, 10].map((n) => [
            backoffDelay(n, opts, () => 0), backoffDelay(n, opts, () => 1)]);
        }"""
    )
    assert delays == [[50, 100], [100, 200], [200, 400], [400, 800], [500, 1000], [500, 1000]]


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
