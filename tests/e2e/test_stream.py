"""Event streams on two real Daphne instances over real Redis (docs/sse.md).

Each event reaches the client as Daphne writes it (no buffering); a client that reconnects
with ``Last-Event-ID`` after its instance is killed, or that stays open across a Redis
restart, holds every durable event owed to it exactly once; and a stream is a socket:
logout ends it within 2 s, the per-user limit counts it, a drain ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence

import pytest

from realtime_project.close_codes import (
    WS_1012_SERVICE_RESTART,
    WS_4401_UNAUTHORIZED,
    WS_4429_TOO_MANY,
)
from scripts.procs import DaphneInstance
from tests.support.async_poll import async_wait_until
from tests.support.cluster import E2ECluster
from tests.support.delivery_ledger import CommittedLog, committed_logs, last_seqs
from tests.support.sse import SseEvent, TcpStream
from tests.support.ws_client import WsClient, frame_is

pytestmark = [pytest.mark.cluster, pytest.mark.redis, pytest.mark.firestore]

DURABLE = ("message", "read", "member")


class Follower:
    """A stream that reconnects as ``EventSource`` does: with its last id, to the next URL."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.streams: list[TcpStream] = []

    async def connect(self, on: DaphneInstance, *, within: float = 10.0) -> TcpStream:
        last = self.streams[-1].last_event_id if self.streams else None
        stream = await TcpStream.open(on.base_url, token=self.token, last_event_id=last)
        assert stream.status == 200, (stream.status, stream.body)
        self.streams.append(stream)
        await stream.frame_until("connected", within=within)
        return stream

    def durable(self) -> list[tuple[int, SseEvent]]:
        return [(n, e) for n, s in enumerate(self.streams) for e in s.events if e.event in DURABLE]

    def has(self, goal: dict[str, int]) -> bool:
        got: dict[str, int] = {}
        for _, event in self.durable():
            frame = event.json()
            cid = str(frame["conversation_id"])
            got[cid] = max(got.get(cid, 0), int(frame["seq"]))
        return all(got.get(cid, 0) >= seq for cid, seq in goal.items() if seq)

    async def pump(self, *, until: dict[str, int], within: float) -> None:
        async def reached() -> bool:
            await self.streams[-1]._more(0.05)
            return self.has(until)

        await async_wait_until(reached, timeout=within, interval=0, what=f"events up to {until}")

    async def close(self) -> None:
        for stream in self.streams:
            await stream.close()


def tally(
    follower: Follower, start: dict[str, int], logs: dict[str, CommittedLog]
) -> dict[str, list[str]]:
    """Lost, duplicated, out-of-order and mismatched durable events against the log."""
    seen: Counter[tuple[str, int]] = Counter()
    order: dict[tuple[int, str], int] = {}
    problems: dict[str, list[str]] = {
        "lost": [],
        "duplicated": [],
        "out_of_order": [],
        "mismatch": [],
    }
    for n, event in follower.durable():
        frame = event.json()
        cid, seq = str(frame["conversation_id"]), int(frame["seq"])
        if seq <= start.get(cid, 0):
            problems["out_of_order"].append(f"{cid}#{seq} before the start")
            continue
        seen[(cid, seq)] += 1
        if order.get((n, cid), 0) >= seq:
            problems["out_of_order"].append(f"{cid}#{seq}")
        order[(n, cid)] = seq
        committed = logs[cid].by_seq.get(seq)
        if committed is None or committed.get("event_id") != frame.get("event_id"):
            problems["mismatch"].append(f"{cid}#{seq}")
    for cid, log in logs.items():
        for seq in range(start.get(cid, 0) + 1, log.last_seq + 1):
            if seen[(cid, seq)] == 0:
                problems["lost"].append(f"{cid}#{seq}")
            elif seen[(cid, seq)] > 1:
                problems["duplicated"].append(f"{cid}#{seq} x{seen[(cid, seq)]}")
    return problems


async def post_messages(
    cluster: E2ECluster, *, on: Sequence[DaphneInstance], count: int, rate: float
) -> int:
    """``count`` messages from alice to both her conversations with bob, through ``on`` in
    turn (skipping an instance that is down); how many were committed."""
    conversations = [cluster.conversations["alice-bob"], cluster.conversations["alice-bob-carol"]]
    committed = 0
    for n in range(count):
        for attempt in range(len(on)):
            instance = on[(n + attempt) % len(on)]
            try:
                status, _ = await asyncio.to_thread(
                    cluster.api,
                    "POST",
                    f"/api/conversations/{conversations[n % 2]}/messages",
                    user="alice",
                    on=instance,
                    body={"body": f"m{n}", "client_id": f"sse-{time.monotonic_ns()}-{n}"},
                )
            except OSError:
                continue
            if status in (200, 201):
                committed += 1
                break
        await asyncio.sleep(1 / rate)
    return committed


def bob_logs(cluster: E2ECluster) -> dict[str, CommittedLog]:
    return dict(
        committed_logs(
            cluster.a.base_url,
            token=cluster.user("bob").token,
            conversation_ids=[
                cluster.conversations["alice-bob"],
                cluster.conversations["alice-bob-carol"],
            ],
        )
    )


async def test_a_stream_on_a_gets_a_message_posted_on_b_at_once(cluster: E2ECluster) -> None:
    follower = Follower(cluster.user("bob").token)
    stream = await follower.connect(cluster.a)
    try:
        assert stream.headers["content-type"].startswith("text/event-stream")
        ab = cluster.conversations["alice-bob"]
        for n in range(3):
            posted_at = time.monotonic()
            status, body = await asyncio.to_thread(
                cluster.api,
                "POST",
                f"/api/conversations/{ab}/messages",
                user="alice",
                on=cluster.b,
                body={"body": f"hello {n}"},
            )
            assert status == 201
            frame = await stream.frame_until("message", within=5)
            # Flushed as written: well under a second even on a loaded machine, where a
            # buffered stream would wait for the next heartbeat or a full buffer.
            assert time.monotonic() - posted_at < 2
            assert frame["message"]["id"] == body["id"]
            assert stream.events[-1].id
    finally:
        await follower.close()


async def test_across_an_instance_crash_last_event_id_loses_and_repeats_nothing(
    cluster: E2ECluster,
) -> None:
    start = last_seqs(bob_logs(cluster))
    follower = Follower(cluster.user("bob").token)
    await follower.connect(cluster.b)
    try:
        sending = asyncio.ensure_future(post_messages(cluster, on=[cluster.a], count=60, rate=20))
        await follower.pump(until={cid: seq + 10 for cid, seq in start.items()}, within=15)
        cluster.b.kill()
        await follower.streams[-1].wait_ended(within=5)
        await follower.connect(cluster.a)
        committed = await sending
        assert committed == 60
        logs = bob_logs(cluster)
        await follower.pump(until=last_seqs(logs), within=15)
        problems = tally(follower, start, logs)
        print(f"crash: {sum(len(f.events) for f in follower.streams)} events, {problems}")
        assert problems == {"lost": [], "duplicated": [], "out_of_order": [], "mismatch": []}
    finally:
        await follower.close()


async def test_across_a_redis_restart_an_open_stream_loses_and_repeats_nothing(
    cluster: E2ECluster,
) -> None:
    start = last_seqs(bob_logs(cluster))
    follower = Follower(cluster.user("bob").token)
    await follower.connect(cluster.a)
    try:
        sending = asyncio.ensure_future(post_messages(cluster, on=[cluster.b], count=60, rate=20))
        await follower.pump(until={cid: seq + 10 for cid, seq in start.items()}, within=15)
        await asyncio.to_thread(cluster.cluster.redis.restart)
        assert await sending == 60
        logs = bob_logs(cluster)
        # Healing delivers what the outage cost, with no action from the client; a stream
        # the server ended (a slow consumer) comes back with its Last-Event-ID.
        owed = last_seqs(logs)

        async def caught_up() -> bool:
            if follower.has(owed):
                return True
            if follower.streams[-1].ended:
                await follower.connect(cluster.a)
            await follower.streams[-1]._more(0.1)
            return follower.has(owed)

        with contextlib.suppress(TimeoutError):  # the tally below says what is missing
            await async_wait_until(caught_up, timeout=20, interval=0, retry_on=())
        problems = tally(follower, start, logs)
        print(f"redis restart: {len(follower.streams)} stream(s), {problems}")
        assert problems == {"lost": [], "duplicated": [], "out_of_order": [], "mismatch": []}
    finally:
        await follower.close()


def _login(on: DaphneInstance, username: str) -> str:
    request = urllib.request.Request(
        f"{on.base_url}/api/auth/token",
        method="POST",
        data=json.dumps({"username": username, "password": "demo-password"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["token"])


async def test_logout_on_the_other_instance_ends_the_stream_within_two_seconds(
    cluster: E2ECluster,
) -> None:
    token = await asyncio.to_thread(_login, cluster.a, "carol")
    stream = await TcpStream.open(cluster.a.base_url, token=token)
    try:
        await stream.frame_until("connected")
        started = time.monotonic()
        status = await asyncio.to_thread(_logout, cluster.b, token)
        assert status == 204
        closed = await stream.frame_until("close", within=3)
        await stream.wait_ended(within=3)
        assert closed["code"] == WS_4401_UNAUTHORIZED
        assert time.monotonic() - started < 2
        again = await TcpStream.open(cluster.a.base_url, token=token)
        assert again.status == 401
    finally:
        await stream.close()


def _logout(on: DaphneInstance, token: str) -> int:
    request = urllib.request.Request(
        f"{on.base_url}/api/auth/logout",
        method="POST",
        headers={"Authorization": f"Token {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


async def test_a_stream_makes_its_user_online_and_offline_after_the_grace(
    cluster: E2ECluster,
) -> None:
    user_id = cluster.user("admin").id

    def status() -> str | None:
        document = cluster.presence_document(user_id)
        return document.status if document is not None else None

    await async_wait_until(lambda: status() in (None, "offline"), timeout=10, what="offline")
    stream = await TcpStream.open(cluster.b.base_url, token=cluster.user("admin").token)
    try:
        await stream.frame_until("connected")
        await async_wait_until(lambda: status() == "online", timeout=10, what="admin online")
    finally:
        await stream.close()
    await async_wait_until(
        lambda: status() == "offline", timeout=10, what="admin offline after the grace"
    )


async def test_streams_and_sockets_share_the_per_user_limit(cluster: E2ECluster) -> None:
    token = cluster.user("admin").token
    streams: list[TcpStream] = []
    sockets: list[WsClient] = []
    try:
        for n in range(10):
            on = cluster.a if n % 2 else cluster.b
            stream = await TcpStream.open(on.base_url, token=token)
            assert stream.status == 200
            await stream.frame_until("connected")
            streams.append(stream)
            socket = await WsClient.open(on.ws_url, token=token)
            sockets.append(socket)
            await socket.recv_until(frame_is("connected"))
        refused = await TcpStream.open(cluster.b.base_url, token=token)
        assert refused.status == 429
        extra = await WsClient.open(cluster.a.ws_url, token=token)
        sockets.append(extra)
        assert await extra.wait_closed(within=5) == WS_4429_TOO_MANY
        status, info = cluster.api("GET", "/api/connections/info", user="admin", on=cluster.a)
        assert status == 200 and info["connection_count"] == 20
    finally:
        for stream in streams:
            await stream.close()
        for socket in sockets:
            with contextlib.suppress(Exception):
                await socket.close()


async def test_a_draining_instance_ends_its_streams(cluster: E2ECluster) -> None:
    stream = await TcpStream.open(cluster.b.base_url, token=cluster.user("carol").token)
    try:
        await stream.frame_until("connected")
        cluster.b.signal(signal.SIGTERM)
        closed = await stream.frame_until("close", within=10)
        assert closed["code"] == WS_1012_SERVICE_RESTART
        await stream.wait_ended(within=5)
        # The client goes to the other instance with its Last-Event-ID.
        again = await TcpStream.open(
            cluster.a.base_url,
            token=cluster.user("carol").token,
            last_event_id=stream.last_event_id,
        )
        assert again.status == 200
        await again.frame_until("connected")
        await again.close()
    finally:
        await stream.close()
