"""A client that stops reading is closed with 4008, then resumes and has everything.

The slow client's receive window is tiny and it stops reading, so what the server sends it
piles up on the server. With a small ``CHANNEL_CAPACITY`` its queue overflows quickly: it must
be closed with ``4008`` (not left open, starved of what was dropped), the other sockets must
not notice, and its resume must bring back every durable event it missed. The instance's
memory must stay bounded meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from scripts.cluster import Cluster
from tests.ops.delivery_support import (
    DELIVERY_ENV,
    client_for,
    committed,
    connect_clients,
    demo_senders,
    settle_and_check,
)
from tests.ops.support import token
from tests.support.delivery_client import clients_close
from tests.support.delivery_ledger import last_seqs, rest_call
from tests.support.delivery_traffic import Traffic, send_at_rate

pytestmark = pytest.mark.cluster

WS_4008_SLOW_CONSUMER = 4008  # docs/protocol.md
BODY_CHARS = 3000
# The most the test sends before it gives up waiting for the close: several times what the
# queue and the kernel's buffers hold.
MAX_SECONDS = 8.0
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


async def test_client_that_stops_reading_is_closed_4008_and_resumes_with_everything(
    start_cluster,
) -> None:
    cluster = start_cluster(instances=2, firestore=False, CHANNEL_CAPACITY="20", **DELIVERY_ENV)
    one, two = cluster.instances
    others = await connect_clients(cluster, [("alice", two), ("carol", one)], one.base_url)
    slow = client_for(
        cluster, "bob", last_seqs(await committed(cluster, one.base_url)), receive_buffer_bytes=4096
    )
    slow.name = "bob@instance-1 (stops reading)"
    clients = [*others, slow]
    try:
        await slow.connect(one.ws_url)
        rss_before = _rss_bytes(one.pid)
        slow.stop_reading()

        closed = asyncio.Event()
        peak_rss = rss_before

        async def watch() -> None:
            # The client cannot see the close without reading: ask the registry instead.
            nonlocal peak_rss
            while not closed.is_set():
                peak_rss = max(peak_rss, _rss_bytes(one.pid))
                if await asyncio.to_thread(_socket_count, cluster, "bob") == 0:
                    closed.set()
                    return
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch())
        began = time.monotonic()
        traffic = await send_at_rate(
            [two.base_url, one.base_url],
            demo_senders(cluster),
            rate=150,
            seconds=MAX_SECONDS,
            traffic=Traffic(),
            body_chars=BODY_CHARS,
            until=closed,
        )
        assert not traffic.failed, traffic.failed[:3]
        sent_bytes = len(traffic.sent) * BODY_CHARS
        try:
            await asyncio.wait_for(closed.wait(), timeout=5)
        except TimeoutError:
            pytest.fail(
                f"a client that stopped reading was still open {time.monotonic() - began:.1f}s "
                f"and {len(traffic.sent)} messages (~{sent_bytes >> 20} MiB) later; "
                f"instance RSS {rss_before >> 20} -> {_rss_bytes(one.pid) >> 20} MiB"
            )
        finally:
            watcher.cancel()

        slow.resume_reading()
        assert await slow.wait_closed(within=10) == WS_4008_SLOW_CONSUMER
        assert peak_rss - rss_before < RSS_GROWTH_LIMIT_BYTES, (
            f"RSS grew {(peak_rss - rss_before) >> 20} MiB for one socket that stopped reading"
        )
        # 4008 means "reconnect and resume": everything the queue dropped comes back.
        await slow.reconnect(cluster.ws_url)
        await settle_and_check(cluster, clients, one.base_url)
        assert all(len(c.sockets) == 1 and c.current.open for c in others)
    finally:
        await clients_close(clients)
