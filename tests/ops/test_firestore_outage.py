"""Fault 4: the Firestore emulator stops; presence waits, health says degraded, then catches up."""

from __future__ import annotations

import pytest

from tests.ops.support import (
    Stopwatch,
    firestore_status,
    health,
    open_socket,
    user_id,
    wait_health,
)
from tests.support.async_poll import async_wait_until

pytestmark = pytest.mark.cluster


async def test_firestore_outage_degrades_and_presence_catches_up(
    start_cluster, measurements
) -> None:
    cluster = start_cluster(instances=2)
    assert cluster.firestore is not None
    one, two = cluster.instances
    alice, _ = await open_socket(cluster, "alice", one.ws_url)
    sockets = [alice]
    try:
        await async_wait_until(
            lambda: firestore_status(cluster, user_id(cluster, "alice")) == "online", timeout=5
        )
        cluster.firestore.stop()
        clock = Stopwatch()
        await wait_health((one, two), "down", check="firestore", within=3, interval=0.05)
        measurements["firestore_down_to_degraded_s"] = clock.seconds()
        assert health(one.base_url)[1]["status"] == "degraded"

        # Transitions during the outage: bob comes online, alice goes busy. Sockets keep working.
        bob, _ = await open_socket(cluster, "bob", two.ws_url)
        sockets.append(bob)
        ack = await alice.request({"type": "status", "status": "busy"}, within=5)
        assert ack["type"] == "ack"

        cluster.firestore.start()  # same port, empty: as after a regional failover
        clock = Stopwatch()
        await async_wait_until(
            lambda: (
                firestore_status(cluster, user_id(cluster, "bob")) == "online"
                and firestore_status(cluster, user_id(cluster, "alice")) == "busy"
            ),
            timeout=15,
            interval=0.2,
            what="presence caught up in Firestore",
        )
        measurements["firestore_back_to_presence_caught_up_s"] = clock.seconds()
        await wait_health((one, two), "healthy", within=10, interval=0.1)
        measurements["firestore_back_to_healthy_s"] = clock.seconds()
        assert alice.is_open and bob.is_open
    finally:
        for client in sockets:
            await client.close()
