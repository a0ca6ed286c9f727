"""The demo page in headless Chromium: alice and bob on different instances.

Each user is a separate browser context (own storage, own socket) whose page is served by,
and connects to, its own instance; everything they see of each other crossed Redis.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.deployment import Cluster
from tests.browser.conftest import LAPTOP, PHONE
from tests.support.rest import rest_call

pytestmark = [pytest.mark.browser, pytest.mark.cluster, pytest.mark.redis]

SEEN_WITHIN_MS = 10_000
NO_WEBSOCKET = """
window.WebSocket = class {
  constructor() {
    throw new DOMException("WebSockets are blocked here", "SecurityError");
  }
};
"""
PASSWORD = "demo-password"


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    # Cross-instance delivery is milliseconds; the margin is for a loaded 2-core CI machine.
    playwright_expect.set_options(timeout=SEEN_WITHIN_MS)
    return playwright_expect(target)


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Open the demo page in a fresh browser context (a separate user); all closed after.

    ``block_sockets=True`` makes every WebSocket of the page fail at once, as behind a proxy
    that drops them, while HTTP goes through.
    """
    contexts: list[Any] = []

    def open_(
        base_url: str,
        viewport: dict[str, int],
        *,
        block_sockets: bool = False,
        no_websocket: bool = False,
    ) -> Any:
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        page = context.new_page()
        if no_websocket:
            # As in a browser or network where no WebSocket can be made at all.
            page.add_init_script(NO_WEBSOCKET)
        if block_sockets:
            page.route_web_socket(re.compile(r"/ws/"), lambda ws: ws.close(code=4000))
        page.set_default_timeout(SEEN_WITHIN_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.errors = errors
        trace_sockets(page, f"{viewport['width']}px")
        page.goto(f"{base_url}/")
        return page

    yield open_
    for context in contexts:
        context.close()


def trace_sockets(page: Any, label: str) -> None:
    """Print every socket frame and API call of the page (pytest shows it when a test fails);
    keep what it sent in ``page.sent_frames``."""
    started = time.monotonic()
    page.sent_frames = []

    def keep(payload: Any) -> None:
        with contextlib.suppress(TypeError, ValueError):  # a binary frame: not ours
            page.sent_frames.append(json.loads(payload))

    def trace(direction: str, payload: Any) -> None:
        print(f"{label} {time.monotonic() - started:7.3f} {direction} {payload}")

    def sent(payload: Any) -> None:
        trace(">>", payload)
        keep(payload)

    def on_socket(socket: Any) -> None:
        trace("open", socket.url.split("?")[0])
        socket.on("framesent", sent)
        socket.on("framereceived", lambda payload: trace("<<", payload))
        socket.on("close", lambda _: trace("closed", ""))

    page.on("websocket", on_socket)

    def on_request(request: Any) -> None:
        if "/api/" in request.url:
            trace(request.method, f"{request.url.split('/api/')[1]} {request.post_data or ''}")

    page.on("requestfinished", on_request)


def sign_in(page: Any, username: str, instance_id: str | re.Pattern[str]) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#connection-badge")).to_have_attribute("data-state", "open")
    expect(page.locator("#instance-id")).to_have_text(instance_id)


def open_conversation(page: Any, title: str) -> None:
    page.locator(".conversation-name", has_text=re.compile(rf"^{re.escape(title)}$")).click()
    expect(page.locator("#conversation-title")).to_have_text(title)


def dot(page: Any, user_id: str) -> Any:
    return page.locator(f"#participants .dot[data-user='{user_id}']")


def say(page: Any, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.press_sequentially(text, delay=5)
    box.press("Enter")
    expect(page.locator(".message.mine .body", has_text=text)).to_be_visible()


def api(
    cluster: Cluster, method: str, path: str, *, user: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """One REST call as ``user`` through the balancer: (status, decoded JSON body)."""
    token = cluster.demo["users"][user]["token"]
    return rest_call(cluster.url, method, path, token=token, body=body)


def set_offline(page: Any, offline: bool) -> None:
    """Take the page's network away (or give it back) as DevTools does: sockets included."""
    session = getattr(page, "cdp", None)
    if session is None:
        session = page.cdp = page.context.new_cdp_session(page)
        session.send("Network.enable")
    session.send(
        "Network.emulateNetworkConditions",
        {"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )


def sent_frames(page: Any) -> list[dict[str, Any]]:
    """Every JSON frame the page sent on any of its sockets, oldest first."""
    frames: list[dict[str, Any]] = page.sent_frames
    return frames


def shoot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path), animations="disabled")


def test_two_users_on_two_instances_see_each_other(
    open_page: Callable[..., Any], cluster: Cluster, screenshot_dir: Path
) -> None:
    web_a, web_b = cluster.instances
    users = cluster.demo["users"]
    alice_id, bob_id = users["alice"]["id"], users["bob"]["id"]

    bob = open_page(web_b.base_url, PHONE)
    sign_in(bob, "bob", web_b.instance_id)
    open_conversation(bob, "alice-bob")
    alice = open_page(web_a.base_url, LAPTOP)
    sign_in(alice, "alice", web_a.instance_id)
    open_conversation(alice, "alice-bob")

    # Presence: alice's first socket makes her online for bob, and her status choice follows.
    expect(dot(bob, alice_id)).to_have_attribute("data-status", "online")
    expect(dot(alice, bob_id)).to_have_attribute("data-status", "online")
    alice.get_by_label("Status").select_option("busy")
    expect(dot(bob, alice_id)).to_have_attribute("data-status", "busy")

    # Typing reaches bob while alice writes, and the message ends it.
    box = alice.get_by_role("textbox", name="Message")
    box.press_sequentially("Hello from the first instance", delay=5)
    expect(bob.locator("#typing")).to_contain_text("is typing")
    box.press("Enter")
    expect(bob.locator(".message .body", has_text="Hello from the first instance")).to_be_visible()
    expect(bob.locator("#typing")).to_have_text("")

    # Bob has seen it on screen: alice's copy says so.
    sent = alice.locator(".message.mine", has_text="Hello from the first instance")
    expect(sent.locator(".receipt")).to_contain_text("Read by")

    say(bob, "Hi alice, bob here on the second one")
    expect(alice.locator(".message .body", has_text="bob here on the second one")).to_be_visible()

    shoot(alice, screenshot_dir / "alice-laptop.png")
    shoot(bob, screenshot_dir / "bob-phone.png")
    assert alice.errors == [] and bob.errors == []


def test_page_reconnects_by_itself_when_its_instance_dies(
    open_page: Callable[..., Any], cluster: Cluster, screenshot_dir: Path
) -> None:
    alice = open_page(cluster.url, LAPTOP)  # through HAProxy, as a user would
    sign_in(alice, "alice", re.compile(r"^instance-\d+$"))
    first = alice.locator("#instance-id").inner_text()
    open_conversation(alice, "alice-bob")
    # Bob sits on the other instance, so the crash is alice's alone.
    other = next(i for i in cluster.instances if i.instance_id != first)
    bob = open_page(other.base_url, LAPTOP)
    sign_in(bob, "bob", other.instance_id)
    open_conversation(bob, "alice-bob")

    cluster.instance(first).kill()
    badge = alice.locator("#connection-badge")
    expect(badge).to_have_attribute("data-state", "reconnecting")
    shoot(alice, screenshot_dir / "alice-reconnecting.png")

    # No reload, no click: the balancer hands the next attempt to the survivor.
    expect(badge).to_have_attribute("data-state", "open")
    expect(alice.locator("#instance-id")).to_have_text(other.instance_id)

    say(alice, "Still here after the crash")
    expect(bob.locator(".message .body", has_text="Still here after the crash")).to_be_visible()
    say(bob, "Welcome back")
    expect(alice.locator(".message .body", has_text="Welcome back")).to_be_visible()
    shoot(alice, screenshot_dir / "alice-reconnected.png")
    assert alice.errors == [] and bob.errors == []


def test_page_sends_through_the_api_while_its_socket_cannot_connect(
    open_page: Callable[..., Any], cluster: Cluster
) -> None:
    web_a, web_b = cluster.instances
    bob = open_page(web_b.base_url, LAPTOP)
    sign_in(bob, "bob", web_b.instance_id)
    open_conversation(bob, "alice-bob")

    alice = open_page(web_a.base_url, LAPTOP, block_sockets=True)
    alice.get_by_label("Username").fill("alice")
    alice.get_by_label("Password").fill(PASSWORD)
    alice.get_by_role("button", name="Sign in").click()
    expect(alice.locator("#connection-badge")).to_have_attribute("data-state", "reconnecting")
    open_conversation(alice, "alice-bob")

    box = alice.get_by_role("textbox", name="Message")
    box.press_sequentially("Typed without a socket", delay=5)
    expect(bob.locator("#typing")).to_contain_text("is typing")
    box.press("Enter")
    expect(alice.locator(".message.mine .body", has_text="Typed without a socket")).to_be_visible()
    expect(bob.locator(".message .body", has_text="Typed without a socket")).to_be_visible()
    assert alice.errors == [] and bob.errors == []


def test_page_without_websockets_lives_on_server_sent_events_each_message_once(
    open_page: Callable[..., Any], cluster: Cluster
) -> None:
    tag = uuid.uuid4().hex[:6]
    conversation_id = cluster.demo["conversations"]["alice-bob"]["id"]
    web_a, web_b = cluster.instances
    bob = open_page(web_b.base_url, LAPTOP)
    sign_in(bob, "bob", web_b.instance_id)
    open_conversation(bob, "alice-bob")

    alice = open_page(web_a.base_url, LAPTOP, no_websocket=True)
    streams: list[str] = []
    alice.on("request", lambda r: streams.append(r.url) if "/api/events/stream" in r.url else None)
    sign_in(alice, "alice", web_a.instance_id)
    badge = alice.locator("#connection-badge")
    expect(badge).to_have_attribute("data-transport", "sse")
    assert alice.evaluate("window.realtimeClient.transport") == "sse"
    assert streams, "no event stream was opened"
    open_conversation(alice, "alice-bob")

    # Bob writes on his WebSocket; alice's page gets it over the stream, once.
    say(bob, f"to the stream {tag}")
    incoming = alice.locator(".message .body", has_text=f"to the stream {tag}")
    expect(incoming).to_have_count(1)
    # Alice writes: through the API (the stream takes no frames), stored once, seen by bob.
    say(alice, f"from the stream {tag}")
    expect(
        alice.locator(".message.mine", has_text=f"from the stream {tag}").locator(".receipt")
    ).to_have_text("Sent")
    expect(bob.locator(".message .body", has_text=f"from the stream {tag}")).to_have_count(1)
    status, page = api(cluster, "GET", f"/api/conversations/{conversation_id}/messages", user="bob")
    assert status == 200
    stored = [m["body"] for m in page["results"]]
    assert stored.count(f"from the stream {tag}") == 1
    assert stored.count(f"to the stream {tag}") == 1
    # Still once on alice's page after her own write went round (no echo, no replay twice).
    expect(incoming).to_have_count(1)
    expect(alice.locator(".message .body", has_text=f"from the stream {tag}")).to_have_count(1)
    assert alice.evaluate("window.realtimeClient.lastEventId") is not None
    assert sent_frames(alice) == []
    assert alice.errors == [] and bob.errors == []


def test_page_offline_then_back_shows_every_message_once_in_order_and_sends_its_own_once(
    open_page: Callable[..., Any], cluster: Cluster, screenshot_dir: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    conversation_id = cluster.demo["conversations"]["alice-bob"]["id"]
    alice = open_page(cluster.url, LAPTOP)
    sign_in(alice, "alice", re.compile(r"^instance-\d+$"))
    open_conversation(alice, "alice-bob")
    say(alice, f"before {tag}")

    set_offline(alice, True)
    badge = alice.locator("#connection-badge")
    expect(badge).not_to_have_attribute("data-state", "open")
    # Written while offline: shown at once, waiting for the network.
    box = alice.get_by_role("textbox", name="Message")
    box.press_sequentially(f"typed offline {tag}", delay=2)
    box.press("Enter")
    mine = alice.locator(".message.mine", has_text=f"typed offline {tag}")
    expect(mine.locator(".receipt")).to_have_text("Sending…")
    # Bob writes over REST meanwhile; none of it can reach alice's page yet.
    sent = [f"while away {tag} #{n}" for n in range(5)]
    for text in sent:
        status, _ = api(
            cluster, "POST", f"/api/conversations/{conversation_id}/messages", user="bob",
            body={"body": text},
        )  # fmt: skip
        assert status == 201
    shoot(alice, screenshot_dir / "alice-offline.png")
    set_offline(alice, False)

    expect(badge).to_have_attribute("data-state", "open")
    expect(mine.locator(".receipt")).to_have_text("Sent")
    expect(alice.locator(".message .body", has_text=sent[-1])).to_be_visible()
    bodies = alice.locator(".message .body").all_inner_texts()
    ours = [b for b in bodies if tag in b and "while away" in b]
    assert ours == sent  # each once, in the order bob sent them
    assert bodies.count(f"typed offline {tag}") == 1
    seqs = [int(v) for v in alice.locator("#messages [data-seq]").evaluate_all(
        "items => items.map((li) => li.dataset.seq)")]  # fmt: skip
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    # Whether "before" was acked or its ack was lost with the socket (then the replay settles
    # it), nothing of alice's is left waiting.
    expect(alice.locator(".message.pending")).to_have_count(0)
    # Nothing was reloaded: the page resumed from its last seq on the new socket.
    resumes = [f for f in sent_frames(alice) if f.get("type") == "resume"]
    assert len(resumes) >= 2 and conversation_id in resumes[-1]["positions"]
    # The server stored the offline message once, however often the page tried.
    status, page = api(cluster, "GET", f"/api/conversations/{conversation_id}/messages", user="bob")
    assert status == 200
    stored = [m["body"] for m in page["results"]]
    assert stored.count(f"typed offline {tag}") == 1
    shoot(alice, screenshot_dir / "alice-back-online.png")
    assert alice.errors == []


def test_participants_by_name_add_and_leave_across_instances(
    open_page: Callable[..., Any], cluster: Cluster, screenshot_dir: Path
) -> None:
    web_a, web_b = cluster.instances
    users = cluster.demo["users"]
    title = f"team {uuid.uuid4().hex[:6]}"
    status, conversation = api(
        cluster, "POST", "/api/conversations", user="alice",
        body={"title": title, "participant_ids": [users["bob"]["id"]]},
    )  # fmt: skip
    assert status == 201
    assert sorted(p["username"] for p in conversation["participants"]) == ["alice", "bob"]

    alice = open_page(web_a.base_url, LAPTOP)
    sign_in(alice, "alice", web_a.instance_id)
    open_conversation(alice, title)
    bob = open_page(web_b.base_url, LAPTOP)
    sign_in(bob, "bob", web_b.instance_id)
    open_conversation(bob, title)
    participants = alice.locator("#participants")
    expect(participants).to_contain_text("bob")
    expect(participants).to_contain_text("alice (you)")

    # Alice adds carol (known from another conversation): both pages say so, by name.
    alice.get_by_label("Add someone").select_option(label="carol")
    alice.get_by_role("button", name="Add", exact=True).click()
    expect(participants).to_contain_text("carol")
    expect(bob.locator("#participants")).to_contain_text("carol")
    expect(bob.locator(".system-note", has_text="alice added carol")).to_be_visible()
    expect(alice.locator(".system-note", has_text="alice added carol")).to_be_visible()

    # Bob leaves: the conversation goes from his list; alice sees him go.
    bob.get_by_role("button", name="Leave").click()
    expect(bob.locator(".conversation-name", has_text=title)).to_have_count(0)
    expect(alice.locator(".system-note", has_text="bob left")).to_be_visible()
    expect(participants.locator(f"li[data-user='{users['bob']['id']}']")).to_have_count(0)
    say(alice, f"after bob left {title}")
    shoot(alice, screenshot_dir / "alice-membership.png")
    assert alice.errors == [] and bob.errors == []


def test_page_says_signed_out_when_its_token_is_revoked_and_stops_reconnecting(
    open_page: Callable[..., Any], cluster: Cluster
) -> None:
    alice = open_page(cluster.url, LAPTOP)
    sign_in(alice, "alice", re.compile(r"^instance-\d+$"))
    opened: list[str] = []
    alice.on("websocket", lambda socket: opened.append(socket.url))
    # The page's own token (each sign-in issues a new one), revoked from elsewhere.
    status = alice.evaluate(
        """async () => (await fetch("/api/auth/logout", { method: "POST",
             headers: { Authorization: "Token " + window.realtimeClient.token } })).status"""
    )
    assert status == 204
    badge = alice.locator("#connection-badge")
    expect(badge).to_have_text("Signed out")
    expect(badge).to_have_attribute("data-state", "closed")
    expect(alice.locator("#sign-in-error")).to_contain_text("signed out")
    assert alice.evaluate("window.realtimeClient.lastClose.code") == 4401
    # A revoked token is not retried: no reconnect is scheduled, no socket opened since.
    assert alice.evaluate("!window.realtimeClient.wanted && !window.realtimeClient.reconnectTimer")
    assert opened == []
    assert alice.errors == []


def test_markup_in_messages_and_titles_is_shown_as_text_never_run(
    open_page: Callable[..., Any], cluster: Cluster
) -> None:
    users = cluster.demo["users"]
    hostile = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
    status, created = api(
        cluster,
        "POST",
        "/api/conversations",
        user="alice",
        body={
            "title": f"t{uuid.uuid4().hex[:6]} {hostile}",
            "participant_ids": [users["bob"]["id"]],
        },
    )
    assert status == 201
    bob = open_page(cluster.instances[1].base_url, LAPTOP)
    sign_in(bob, "bob", cluster.instances[1].instance_id)
    title = created["title"]
    bob.locator(".conversation-name", has_text=title).click()
    expect(bob.locator("#conversation-title")).to_have_text(title)
    status, _ = api(
        cluster,
        "POST",
        f"/api/conversations/{created['id']}/messages",
        user="alice",
        body={"body": hostile},
    )
    assert status == 201
    expect(bob.locator(".message .body", has_text=hostile)).to_be_visible()
    assert bob.locator(".message .body img, .message .body script").count() == 0
    assert bob.evaluate("window.__xss") is None
    assert bob.errors == []
