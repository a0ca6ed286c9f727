"""Fault 1: Redis stops while users on two instances exchange events, then comes back empty."""

from __future__ import annotations

import pytest

from tests.ops.support import (
    Stopwatch,
    conversation,
    duplicates,
    health,
    open_sockets,
    registry_connections,
    wait_health,
)
from tests.support.async_poll import async_wait_until
from tests.support.ws_client import WsClient, frame_is

pytestmark = pytest.mark.cluster


async def _typing(sender: WsClient, conversation_id: str, is_typing: bool) -> None:
    await sender.send(
        {"type": "typing", "conversation_id": conversation_id, "is_typing": is_typing}
    )


async def test_redis_outage_degrades_serves_locally_and_recovers(
    start_cluster, measurements
) -> None:
    cluster = start_cluster(instances=2)
    one, two = cluster.instances
    abc = conversation(cluster, "alice-bob-carol")
    sockets = await open_sockets(cluster, ("alice", one), ("carol", one), ("bob", two))
    alice, carol, bob = sockets
    try:
        # Before: events cross instances.
        await _typing(alice, abc, True)
        await bob.recv_until(frame_is("typing", conversation_id=abc, is_typing=True))
        await carol.recv_until(frame_is("typing", conversation_id=abc, is_typing=True))

        cluster.redis.stop()
        clock = Stopwatch()
        await wait_health((one, two), "degraded", within=2, interval=0.05)
        measurements["redis_down_to_degraded_s"] = clock.seconds()
        status, body = health(one.base_url)
        assert status == 200 and body["checks"]["redis"]["status"] == "down"

        # Sockets on the same instance still exchange events; nobody is disconnected.
        await _typing(alice, abc, False)
        await carol.recv_until(frame_is("typing", conversation_id=abc, is_typing=False))
        assert all(s.is_open for s in sockets)

        cluster.redis.start()
        clock = Stopwatch()
        # Redis's own start and the links' reconnect backoff come first; on a loaded machine
        # that alone has taken most of 2 s.
        await wait_health((one, two), "healthy", within=5, interval=0.05)
        measurements["redis_back_to_healthy_s"] = clock.seconds()

        # Cross-instance delivery is back: alice keeps typing until bob hears her.
        async def bob_hears_alice() -> bool:
            await _typing(alice, abc, True)
            try:
                await bob.recv_until(
                    frame_is("typing", conversation_id=abc, is_typing=True), within=0.1
                )
            except TimeoutError:
                return False
            return True

        await async_wait_until(bob_hears_alice, timeout=2, interval=0, what="bob hears alice")
        measurements["redis_back_to_cross_instance_delivery_s"] = clock.seconds()

        # Every live socket is in the (emptied, restarted) registry again.
        await async_wait_until(
            lambda: registry_connections(cluster) == {"instance-1": 2, "instance-2": 1},
            timeout=3,
            interval=0.1,
            what="sockets registered again",
        )
        measurements["redis_back_to_registry_replayed_s"] = clock.seconds()

        for client in sockets:
            await client.drain(within=0.3)
            assert duplicates(client) == [], "an event was delivered twice"
        assert all(s.is_open for s in sockets), "a socket was closed by the outage"
    finally:
        for client in sockets:
            await client.close()
