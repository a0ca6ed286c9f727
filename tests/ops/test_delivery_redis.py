"""Nothing lost, nothing twice across Redis failures (docs/protocol.md, "Delivery").

Durable events are committed over REST at a fixed rate on both instances while Redis is
killed and restarted (empty: it keeps nothing on disk). Every socket's deliveries are then
counted against the event log the database holds.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.ops.delivery_support import (
    DELIVERY_ENV,
    committed_after,
    connect_clients,
    demo_senders,
    settle_and_check,
)
from tests.support.delivery_client import clients_close
from tests.support.delivery_traffic import Traffic, send_at_rate

pytestmark = pytest.mark.cluster

RATE = 25.0  # messages a second, over both instances
SECONDS = 4.0


async def test_redis_killed_mid_stream_open_sockets_heal_without_client_action(
    start_cluster,
) -> None:
    cluster = start_cluster(instances=2, firestore=False, **DELIVERY_ENV)
    one, two = cluster.instances
    # Each conversation has members on both instances; bob has a socket on each.
    clients = await connect_clients(
        cluster, [("alice", one), ("bob", two), ("carol", one), ("bob", one)], one.base_url
    )
    try:
        traffic = Traffic()
        sending = asyncio.create_task(
            send_at_rate(
                [one.base_url, two.base_url],
                demo_senders(cluster),
                rate=RATE,
                seconds=SECONDS,
                traffic=traffic,
            )
        )
        await committed_after(traffic, 0, 10, within=5)
        await asyncio.to_thread(cluster.redis.kill)
        down_at = time.monotonic()
        # Events committed while Redis is away: only healing can deliver them across.
        await committed_after(traffic, down_at, 15, within=5)
        await asyncio.to_thread(cluster.redis.start)
        up_at = time.monotonic()
        await sending
        assert not traffic.failed, traffic.failed[:3]
        assert traffic.between(down_at, up_at), "nothing was committed while Redis was down"

        await settle_and_check(cluster, clients, one.base_url)
        # No client action: not one socket closed or reconnected.
        assert [len(c.sockets) for c in clients] == [1] * len(clients)
        assert all(c.current.open for c in clients)
    finally:
        await clients_close(clients)


async def test_redis_restarted_empty_then_a_client_resumes_with_everything(start_cluster) -> None:
    cluster = start_cluster(instances=2, firestore=False, **DELIVERY_ENV)
    one, two = cluster.instances
    clients = await connect_clients(
        cluster, [("alice", one), ("bob", two), ("carol", two)], one.base_url
    )
    alice, bob, carol = clients
    try:
        traffic = Traffic()
        sending = asyncio.create_task(
            send_at_rate(
                [two.base_url, one.base_url],
                demo_senders(cluster),
                rate=RATE,
                seconds=SECONDS,
                traffic=traffic,
            )
        )
        await committed_after(traffic, 0, 8, within=5)
        await bob.close()  # bob goes away; what he misses is in the log, not in Redis
        gone_at = time.monotonic()
        await committed_after(traffic, gone_at, 8, within=5)
        await asyncio.to_thread(cluster.redis.restart)
        restarted_at = time.monotonic()
        await committed_after(traffic, restarted_at, 5, within=5)
        # Back while Redis holds nothing of what happened: resume reads the database.
        await bob.reconnect(cluster.ws_url)
        await sending
        assert not traffic.failed, traffic.failed[:3]

        report = await settle_and_check(cluster, clients, one.base_url)
        resumed = bob.current
        assert resumed.resume_ack is not None
        assert all(state["recovered"] for state in resumed.resume_ack["conversations"].values()), (
            resumed.resume_ack
        )
        assert report.per_socket[f"{bob.name}/1@{resumed.instance_id}"].owed > 0
        assert alice.current.open and carol.current.open and len(alice.sockets) == 1
    finally:
        await clients_close(clients)
