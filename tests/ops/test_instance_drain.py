"""Fault 3: SIGTERM drains an instance: 503 at once, sockets closed 1012, registry emptied."""

from __future__ import annotations

import asyncio

import pytest

from realtime_project.close_codes import WS_1012_SERVICE_RESTART
from tests.ops.support import (
    Stopwatch,
    health,
    library_clients,
    open_sockets,
    presence_past_grace,
    registry_connections,
    resumed_on,
)
from tests.support.async_poll import async_wait_until
from tests.support.delivery_client import clients_close

pytestmark = pytest.mark.cluster


async def test_sigterm_drains_then_exits_and_users_stay_online(start_cluster, measurements) -> None:
    cluster = start_cluster(instances=2, DRAIN_DELAY_SECONDS="1.5")
    one, two = cluster.instances
    sockets = await open_sockets(cluster, ("bob", two))
    (bob,) = sockets
    clients = await library_clients(cluster, ("alice", "carol"), one)
    alice, carol = clients
    try:
        await async_wait_until(
            lambda: registry_connections(cluster) == {"instance-1": 2, "instance-2": 1},
            timeout=5,
        )
        one.signal(15)
        clock = Stopwatch()
        await async_wait_until(
            lambda: health(one.base_url)[0] == 503, timeout=1, interval=0.02, what="503"
        )
        measurements["sigterm_to_health_503_s"] = clock.seconds()
        status, body = health(one.base_url)
        assert (status, body["status"], body["draining"]) == (503, "unhealthy", True)
        # The sockets stay up through the delay, while the balancer takes the instance out.
        assert alice.current.open and carol.current.open

        codes = await asyncio.gather(alice.wait_closed(within=10), carol.wait_closed(within=10))
        measurements["sigterm_to_sockets_closed_1012_s"] = clock.seconds()
        assert list(codes) == [WS_1012_SERVICE_RESTART, WS_1012_SERVICE_RESTART]
        closed_at = clock.seconds()

        await async_wait_until(
            lambda: registry_connections(cluster).get("instance-1", 0) == 0,
            timeout=2,
            interval=0.05,
            what="instance-1's entries removed",
        )
        measurements["drain_sockets_closed_to_registry_empty_s"] = round(
            clock.seconds() - closed_at, 3
        )
        cluster.wait_balancer(down=["instance-1"], up=["instance-2"], timeout=3)

        # The process exits on its own once drained.
        await async_wait_until(lambda: not one.alive(), timeout=10, what="instance-1 exit")
        measurements["sigterm_to_process_exit_s"] = clock.seconds()

        # 1012 means "reconnect": the client package goes at once to its next URL, the
        # balancer, which takes it to the survivor, within the grace.
        for client in clients:
            await resumed_on(client, "instance-2", within=10)
        offline, statuses = await presence_past_grace(cluster, bob, ("alice", "carol"), since=clock)
        assert offline == []
        assert statuses == {"online"}
    finally:
        await clients_close(clients)
        for socket in sockets:
            await socket.close()
