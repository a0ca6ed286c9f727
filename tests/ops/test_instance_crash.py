"""Fault 2: an instance is SIGKILLed; its clients move to the survivors through HAProxy."""

from __future__ import annotations

import pytest

from tests.ops.support import (
    Stopwatch,
    library_clients,
    open_sockets,
    presence_past_grace,
    registry_connections,
    resumed_on,
)
from tests.support.async_poll import async_wait_until
from tests.support.delivery_client import clients_close

pytestmark = pytest.mark.cluster


async def test_killed_instance_is_routed_around_reaped_and_its_users_never_go_offline(
    start_cluster, measurements
) -> None:
    cluster = start_cluster(instances=2)
    one, two = cluster.instances
    # alice and carol on the victim, bob (who watches their presence) on the survivor.
    sockets = await open_sockets(cluster, ("bob", two))
    (bob,) = sockets
    clients = await library_clients(cluster, ("alice", "carol"), one)
    alice, _carol = clients
    try:
        await async_wait_until(
            lambda: registry_connections(cluster).get("instance-1") == 2, timeout=5
        )
        one.kill()
        clock = Stopwatch()
        assert await alice.wait_closed(within=5) != 1012  # a crash, not a drain

        # The client package reconnects by itself: the dead URL refuses, the balancer takes it
        # to the survivor.
        for client in clients:
            await resumed_on(client, "instance-2", within=10)
        measurements["kill_to_clients_reconnected_s"] = clock.seconds()

        cluster.wait_balancer(down=["instance-1"], up=["instance-2"], timeout=5)
        measurements["kill_to_haproxy_marks_down_s"] = clock.seconds()

        # The lapsed lease is noticed by the survivor and the dead instance's entries go.
        await async_wait_until(
            lambda: "instance-1" not in registry_connections(cluster),
            timeout=8,
            interval=0.1,
            what="instance-1 reaped",
        )
        measurements["kill_to_registry_reaped_s"] = clock.seconds()
        assert registry_connections(cluster) == {"instance-2": 3}

        # Past the grace period: alice and carol never went offline, for bob or for the API.
        offline, statuses = await presence_past_grace(cluster, bob, ("alice", "carol"), since=clock)
        assert offline == []
        assert statuses == {"online"}
    finally:
        await clients_close(clients)
        for socket in sockets:
            await socket.close()
