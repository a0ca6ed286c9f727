"""Slow consumers are closed (4008), never starved: they resume and have everything.

Two ways a socket falls behind. A client that stops reading (a tiny receive window, then no
reads): what the server sends it piles up until a bound closes it, the server's memory stays
bounded meanwhile, and other sockets do not notice. A burst that outruns the consumer (a
presence storm from another process into its channel, with a small ``CHANNEL_CAPACITY``):
the layer queue overflows and the socket is closed with ``4008``, instead of staying open
having lost what was dropped. Either way the resume brings back every durable event.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from realtime_layer import RealtimeChannelLayer
from scripts.deployment import Cluster
from tests.ops.delivery_support import (
    DELIVERY_ENV,
    client_for,
    committed,
    committed_after,
    connect_clients,
    demo_senders,
    settle_and_check,
)
from tests.ops.support import token
from tests.support.delivery_client import clients_close
from tests.support.delivery_ledger import last_seqs
from tests.support.delivery_traffic import Traffic, send_at_rate
from tests.support.rest import rest_call

pytestmark = pytest.mark.cluster

WS_4008_SLOW_CONSUMER = 4008  # docs/protocol.md
# What the server may buffer for one socket (WS_MAX_BUFFERED_BYTES), and how long the client
# stops reading: long enough to send more than the kernel's buffers absorb (the server's send
# buffer grows to 4 MiB on Linux) and then the bound, hence messages far above the default
# MESSAGE_MAX_LENGTH.
BUFFER_BOUND_BYTES = 64 * 1024
BODY_CHARS = 50_000
STOPPED_SECONDS = 3.0
STOPPED_MIN_BYTES = 6 * 1024 * 1024
STORM_EVENTS = 3000
RSS_GROWTH_LIMIT_BYTES = 64 * 1024 * 1024


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _socket_count(cluster: Cluster, name: str) -> int:
    status, body = rest_call(
        cluster.url, "GET", "/api/connections/info", token=token(cluster, name)
    )
    assert status == 200, body
    return int(body["connection_count"])


async def test_client_that_stops_reading_is_closed_then_resumes_with_everything(
    start_cluster,
) -> None:
    cluster = start_cluster(
        instances=2,
        firestore=False,
        CHANNEL_CAPACITY="20",
        WS_MAX_BUFFERED_BYTES=str(BUFFER_BOUND_BYTES),
        MESSAGE_MAX_LENGTH=str(BODY_CHARS),
        **DELIVERY_ENV,
    )
    one, two = cluster.instances
    others = await connect_clients(cluster, [("alice", two), ("carol", one)], one.base_url)
    slow = client_for(
        cluster, "bob", last_seqs(await committed(cluster, one.base_url)), receive_buffer_bytes=4096
    )
    slow.name = "bob@instance-1 (stops reading)"
    clients = [*others, slow]
    try:
        await slow.connect(one.ws_url)
        rss_before = peak_rss = _rss_bytes(one.pid)
        slow.stop_reading()
        traffic = Traffic()
        sending = asyncio.create_task(
            send_at_rate(
                [two.base_url, one.base_url],
                demo_senders(cluster),
                rate=100,
                seconds=STOPPED_SECONDS,
                traffic=traffic,
                body_chars=BODY_CHARS,
            )
        )
        while not sending.done():
            peak_rss = max(peak_rss, _rss_bytes(one.pid))
            await asyncio.sleep(0.1)
        await sending
        assert not traffic.failed, traffic.failed[:3]
        sent_bytes = len(traffic.sent) * BODY_CHARS
        assert sent_bytes > STOPPED_MIN_BYTES, f"only {sent_bytes} bytes sent: nothing to bound"

        # Reading again, it finds what was buffered, then the server's close: 4008 if the
        # close frame was still there to read, an abort if the server gave up waiting for
        # the client to take it. Open is the one wrong answer.
        slow.resume_reading()
        try:
            code = await slow.wait_closed(within=10)
        except TimeoutError:
            pytest.fail(
                f"a client that stopped reading for {STOPPED_SECONDS}s while ~{sent_bytes >> 10} "
                f"KiB were sent to it is still open; instance RSS {rss_before >> 20} -> "
                f"{peak_rss >> 20} MiB"
            )
        assert code in (WS_4008_SLOW_CONSUMER, 1006), f"closed with {code}"
        assert peak_rss - rss_before < RSS_GROWTH_LIMIT_BYTES, (
            f"RSS grew {(peak_rss - rss_before) >> 20} MiB for one socket that stopped reading"
        )
        await slow.reconnect(cluster.ws_url)
        await settle_and_check(cluster, clients, one.base_url)
        assert all(len(c.sockets) == 1 and c.current.open for c in others)
    finally:
        await clients_close(clients)


async def test_socket_whose_queue_overflows_is_closed_4008_and_resumes_with_everything(
    start_cluster,
) -> None:
    """The layer-queue path: a burst from another process (a presence storm) outruns bob's
    consumer; his socket must close 4008, not stay open having lost durable events."""
    cluster = start_cluster(instances=2, firestore=False, CHANNEL_CAPACITY="50", **DELIVERY_ENV)
    one, two = cluster.instances
    clients = await connect_clients(
        cluster, [("alice", two), ("carol", one), ("bob", one)], one.base_url
    )
    alice, carol, bob = clients
    layer = RealtimeChannelLayer(hosts=cluster.redis.url, instance_id="storm")
    try:
        traffic = Traffic()
        sending = asyncio.create_task(
            send_at_rate(
                [two.base_url, one.base_url],
                demo_senders(cluster),
                rate=25,
                seconds=3,
                traffic=traffic,
            )
        )
        await committed_after(traffic, 0, 10, within=5)
        bob_id = str(cluster.demo["users"]["bob"]["id"])
        for _ in range(STORM_EVENTS):
            event_id = uuid.uuid4().hex
            frame = {
                "type": "presence",
                "event_id": event_id,
                "ts": datetime.now(UTC).isoformat(),
                "user_id": bob_id,
                "status": "online",
                "last_seen": None,
            }
            await layer.group_send(
                f"user.{bob_id}",
                {"type": "realtime.event", "event": frame, "dedup_key": event_id},
            )
        assert await bob.wait_closed(within=10) == WS_4008_SLOW_CONSUMER
        await bob.reconnect(cluster.ws_url)
        await sending
        assert not traffic.failed, traffic.failed[:3]
        await settle_and_check(cluster, clients, one.base_url)
        assert alice.current.open and carol.current.open
        assert len(alice.sockets) == len(carol.sockets) == 1
    finally:
        await layer.close()
        await clients_close(clients)
