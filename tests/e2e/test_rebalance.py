"""Rebalancing on three real instances behind HAProxy (connections/rebalance.py).

30 reconnecting clients spread over three instances; one instance is killed (its clients
reconnect to the other two) and started again, empty. The two full ones hand their surplus
back with 1012 at a bounded rate; within 20 s every instance is within the threshold of the
mean, and every client, across all its reconnects, has every message exactly once, in order.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from realtime_project.close_codes import WS_1012_SERVICE_RESTART
from scripts.deployment import Cluster
from tests.ops.support import registry_connections
from tests.support.async_poll import async_wait_until
from tests.support.cluster import E2E_ENV
from tests.support.delivery_client import DeliveryClient
from tests.support.delivery_ledger import (
    assert_exactly_once,
    committed_log,
    committed_logs,
    last_seqs,
)
from tests.support.rest import rest_call
from tests.support.services import service_running

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

CLIENTS = 30
THRESHOLD = 0.25
CONVERGE_SECONDS = 20
ENV = {
    **E2E_ENV,
    "HEAL_INTERVAL_SECONDS": "1",
    "RATE_LIMIT_FRAMES_PER_SECOND": "1000",
    "RATE_LIMIT_BURST": "1000",
    "MAX_SOCKETS_PER_USER": "100",
    "REBALANCE_THRESHOLD": str(THRESHOLD),
    "REBALANCE_CLOSE_RATE": "20",
    "REBALANCE_MIN_SURPLUS": "1",
    "REBALANCE_INTERVAL_SECONDS": "1",
}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(
        instances=3,
        state_dir=tmp_path_factory.mktemp("rebalance"),
        env=ENV,
        with_firestore=False,
        database_url=os.environ.get("DATABASE_URL"),
    )
    with service_running(cluster):
        yield cluster


def balanced(counts: dict[str, int], instances: int) -> bool:
    if len(counts) != instances:
        return False
    mean = sum(counts.values()) / instances
    return all(
        math.floor(mean * (1 - THRESHOLD)) <= n <= math.ceil(mean * (1 + THRESHOLD))
        for n in counts.values()
    )


async def keep_connected(client: DeliveryClient, url: str, stop: asyncio.Event) -> None:
    """Connect through the balancer; the client package reconnects and resumes on any close
    by itself until the test stops."""
    await client.reconnect(url)
    await stop.wait()


async def test_a_restarted_instance_gets_its_share_back_and_nothing_is_lost(
    deployment: Cluster,
) -> None:
    abc = str(deployment.demo["conversations"]["alice-bob-carol"]["id"])
    token = deployment.demo["users"]["alice"]["token"]
    start = committed_log(deployment.url, token=token, conversation_id=abc).last_seq
    names = ["alice", "bob", "carol"]
    clients = [
        DeliveryClient(
            name=f"{names[n % 3]}-{n}",
            token=deployment.demo["users"][names[n % 3]]["token"],
            conversations=[abc],
            positions={abc: start},
        )
        for n in range(CLIENTS)
    ]
    stop, sending = asyncio.Event(), asyncio.Event()
    keepers = [asyncio.create_task(keep_connected(c, deployment.ws_url, stop)) for c in clients]

    async def send_steadily() -> None:
        n = 0
        while not sending.is_set():
            code, body = await asyncio.to_thread(
                rest_call,
                deployment.url,
                "POST",
                f"/api/conversations/{abc}/messages",
                token=token,
                body={"body": f"m{n}"},
            )
            assert code == 201, (code, body)
            n += 1
            await asyncio.sleep(0.05)

    async def counts_now() -> dict[str, int]:
        # Off the event loop: the clients and the sender keep running meanwhile.
        return await asyncio.to_thread(registry_connections, deployment)

    async def spread() -> dict[str, int] | None:
        counts = await counts_now()
        # Every client placed: one handed back with 1012 and not yet reconnected would leave
        # a mean over fewer sockets, by which a short share still looks balanced.
        placed = sum(counts.values()) == CLIENTS
        return counts if placed and balanced(counts, 3) else None

    async def on_survivors() -> bool:
        counts = await counts_now()
        return sum(counts.get(i.instance_id, 0) for i in deployment.instances[:2]) == CLIENTS

    sender: asyncio.Task[None] | None = None
    try:
        await async_wait_until(
            lambda: all(c.sockets and c.current.open for c in clients),
            timeout=20,
            what="every client connected",
        )
        await async_wait_until(spread, timeout=10, what="clients spread over three instances")
        sender = asyncio.create_task(send_steadily())
        victim = deployment.instances[2]
        victim.kill()
        await async_wait_until(
            on_survivors, timeout=15, what="every client back on the two survivors"
        )
        await asyncio.to_thread(deployment.restart_instance, victim)
        restarted = time.monotonic()
        await asyncio.to_thread(deployment.wait_balancer, up=[victim.instance_id], timeout=10)
        counts = await async_wait_until(
            spread,
            timeout=CONVERGE_SECONDS,
            interval=0.2,
            what=f"counts within {THRESHOLD:.0%} of the mean",
        )
        converged = time.monotonic() - restarted
        sending.set()
        await sender
        logs = committed_logs(deployment.url, token=token, conversation_ids=[abc])
        for client in clients:
            await client.wait_reached(last_seqs(logs), within=15)
        await asyncio.sleep(0.5)  # not an assertion's wait: a late duplicate gets the chance
        report = assert_exactly_once(clients, logs)
        codes = Counter(r.close_code for c in clients for r in c.sockets if not r.open)
        total = report.total().summary()
        print(
            f"converged {converged:.1f}s after the restart: {counts}; "
            f"{last_seqs(logs)[abc] - start} messages; closes {dict(codes)}; {total}"
        )
        # The survivors handed sockets back with 1012, and the restarted one holds its share.
        assert codes[WS_1012_SERVICE_RESTART] >= 1
        assert counts[victim.instance_id] >= math.floor(CLIENTS / 3 * (1 - THRESHOLD))
    finally:
        sending.set()
        stop.set()
        if sender is not None and not sender.done():
            await asyncio.gather(sender, return_exceptions=True)
        await asyncio.gather(*keepers, return_exceptions=True)
        for client in clients:
            await client.close()
