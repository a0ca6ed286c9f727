"""Nothing lost, nothing twice when the instance holding a socket dies or drains.

The clients on the victim are the project's client package with the survivor as their next
URL: they reconnect by themselves, land on the survivor and resume; durable events keep being
committed on the survivor meanwhile. Every socket (the dead ones, the resumed ones, and the
survivor's own) is counted against the log.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from realtime_project.close_codes import WS_1012_SERVICE_RESTART
from tests.ops.delivery_support import (
    DELIVERY_ENV,
    committed_after,
    connect_clients,
    demo_senders,
    settle_and_check,
)
from tests.support.delivery_client import DeliveryClient, clients_close
from tests.support.delivery_traffic import Traffic, send_at_rate

pytestmark = pytest.mark.cluster

RATE = 25.0
SECONDS = 4.0


async def _fault_then_resume(
    start_cluster, *, fault: str, expect_code: int | None
) -> list[DeliveryClient]:
    cluster = start_cluster(instances=2, firestore=False, **DELIVERY_ENV)
    one, two = cluster.instances
    clients = await connect_clients(
        cluster, [("alice", one), ("carol", one), ("bob", two)], two.base_url
    )
    alice, carol, _bob = clients
    try:
        traffic = Traffic()
        sending = asyncio.create_task(
            send_at_rate(
                [two.base_url], demo_senders(cluster), rate=RATE, seconds=SECONDS, traffic=traffic
            )
        )
        await committed_after(traffic, 0, 10, within=5)
        if fault == "kill":
            await asyncio.to_thread(one.kill)
        else:
            one.signal(signal.SIGTERM)
        fault_at = time.monotonic()

        async def move(client: DeliveryClient) -> None:
            code = await client.wait_closed(within=10)
            if expect_code is not None:
                assert code == expect_code, f"{client.name} closed with {code}"
            else:
                assert code != WS_1012_SERVICE_RESTART, "a crash is not a drain"
            await client.reconnect(cluster.ws_url, within=15)

        await asyncio.gather(move(alice), move(carol))
        await sending
        assert not traffic.failed, traffic.failed[:3]
        assert [s for s in traffic.sent if s.started_at >= fault_at], "no traffic after fault"

        await settle_and_check(cluster, clients, two.base_url)
        for client in (alice, carol):
            assert [s.instance_id for s in client.sockets] == ["instance-1", "instance-2"]
            assert client.current.open
        return clients
    finally:
        await clients_close(clients)


async def test_receiving_instance_sigkilled_clients_resume_on_the_survivor(start_cluster) -> None:
    await _fault_then_resume(start_cluster, fault="kill", expect_code=None)


async def test_receiving_instance_drained_clients_resume_on_the_survivor(start_cluster) -> None:
    await _fault_then_resume(start_cluster, fault="drain", expect_code=WS_1012_SERVICE_RESTART)
