"""Fault 3: SIGTERM drains an instance: 503 at once, sockets closed 1012, registry emptied,
and the process exits by itself soon after, however busy it was."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from realtime_client import RealtimeError

from bench.e2e.targets import users_seed
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
from tests.support.delivery_client import DeliveryClient, clients_close

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


BUSY_SOCKETS = 300
SENDING_SOCKETS = 100
# Each sender's pace: a message (and its fan-out) in flight most of the time on a 2-core box.
SEND_INTERVAL_SECONDS = 0.5


async def _send(client: DeliveryClient, *, stop: asyncio.Event) -> None:
    """Send messages at a steady pace, so some are in flight on the draining instance when it
    closes, and the survivor writes and resumes at the same time (the client package fails
    over to the next URL by itself and keeps unsent messages in its outbox)."""
    sent = 0
    conversation_id = client.conversations[0]
    while not stop.is_set():
        sent += 1
        with contextlib.suppress(RealtimeError, TimeoutError):
            await client.send_message(conversation_id, f"{client.name} {sent}", within=10)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SEND_INTERVAL_SECONDS):
                await stop.wait()


# Seeding, 300 connects and their failover take a minute or more on a loaded 2-core machine.
@pytest.mark.timeout(300)
async def test_a_busy_instance_exits_by_itself_soon_after_its_last_socket_closes(
    start_cluster, measurements
) -> None:
    delay = 0.5
    cluster = start_cluster(
        instances=2,
        DRAIN_DELAY_SECONDS=str(delay),
        RATE_LIMIT_FRAMES_PER_SECOND="1000",
        RATE_LIMIT_BURST="1000",
    )
    one, two = cluster.instances
    seeded = await asyncio.to_thread(users_seed, cluster, users=BUSY_SOCKETS, size=3)
    clients = [
        DeliveryClient(
            name=f"u{user['id']}",
            token=user["token"],
            conversations=[
                c["id"] for c in seeded["conversations"] if user["id"] in c["participant_ids"]
            ],
        )
        for user in seeded["users"]
    ]
    slots = asyncio.Semaphore(50)

    async def connect(client: DeliveryClient) -> None:
        async with slots:
            # The package retries as it would anywhere (a connect shed by admission comes
            # back to instance-1): connects are not what this test is about.
            await client.connect(one.ws_url, within=60)
            # After the drain's 1012 it moves on to the other instance.
            assert client.client is not None
            client.client.urls = [one.ws_url, two.ws_url]

    users: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    try:
        await asyncio.gather(*(connect(c) for c in clients))
        users = [asyncio.create_task(_send(c, stop=stop)) for c in clients[:SENDING_SOCKETS]]
        # Messages are being sent (and answered) when the drain begins.
        await async_wait_until(
            lambda: (
                sum(len(own) for c in clients for own in c.current.own.values()) >= SENDING_SOCKETS
            ),
            timeout=20,
            what="messages flowing",
        )
        one.signal(15)
        clock = Stopwatch()
        await async_wait_until(
            lambda: all(c.sockets[0].closed_at is not None for c in clients),
            timeout=30,
            what="every socket of instance-1 closed",
        )
        assert {c.sockets[0].close_code for c in clients} == {WS_1012_SERVICE_RESTART}
        last_closed = max(c.sockets[0].closed_at or 0.0 for c in clients)
        await async_wait_until(
            lambda: not one.alive(), timeout=delay + 5 + 5, what="instance-1 exit"
        )
        exited = time.monotonic()
        measurements["busy_drain_last_close_to_exit_s"] = round(exited - last_closed, 3)
        measurements["busy_drain_sigterm_to_exit_s"] = clock.seconds()
        assert exited - last_closed <= delay + 5
        assert one.proc is not None and one.proc.returncode == 0
        assert registry_connections(cluster).get("instance-1", 0) == 0
    finally:
        stop.set()
        await asyncio.gather(*users, return_exceptions=True)
        await clients_close(clients)
