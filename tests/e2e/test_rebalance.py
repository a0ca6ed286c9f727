"""Rebalancing on three real instances behind HAProxy (connections/rebalance.py).

30 reconnecting clients spread over three instances; one instance is killed (its clients
reconnect to the other two) and started again, empty. The two full ones hand their surplus
back with 1012 at a bounded rate; within 20 s every instance is within the threshold of the
mean, and every client, across all its reconnects, has every message exactly once, in order.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator

import pytest

from connections.close_codes import WS_1012_SERVICE_RESTART
from scripts.deployment import Cluster
from scripts.procs import ServiceUnavailable
from tests.ops.support import registry_connections
from tests.support.async_poll import async_wait_until
from tests.support.cluster import E2E_ENV
from tests.support.reconnecting_client import ReconnectingClient
from tests.support.seq_ledger import SeqLedger
from tests.support.services import service_unavailable

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
    )
    try:
        cluster.start()
    except ServiceUnavailable as exc:
        service_unavailable(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


def post_message(cluster: Cluster, conversation_id: str, body: str) -> int:
    request = urllib.request.Request(
        f"{cluster.url}/api/conversations/{conversation_id}/messages",
        method="POST",
        data=json.dumps({"body": body}).encode(),
        headers={
            "Authorization": f"Token {cluster.demo['users']['alice']['token']}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 201
        return int(json.loads(response.read())["seq"])


def last_seq(cluster: Cluster, conversation_id: str) -> int:
    request = urllib.request.Request(
        f"{cluster.url}/api/conversations/{conversation_id}/events?after_seq=0",
        headers={"Authorization": f"Token {cluster.demo['users']['alice']['token']}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(json.loads(response.read())["last_seq"])


def balanced(counts: dict[str, int], instances: int) -> bool:
    if len(counts) != instances:
        return False
    mean = sum(counts.values()) / instances
    return all(
        math.floor(mean * (1 - THRESHOLD)) <= n <= math.ceil(mean * (1 + THRESHOLD))
        for n in counts.values()
    )


async def test_a_restarted_instance_gets_its_share_back_and_nothing_is_lost(
    deployment: Cluster,
) -> None:
    abc = str(deployment.demo["conversations"]["alice-bob-carol"]["id"])
    start = last_seq(deployment, abc)
    names = ["alice", "bob", "carol"]
    clients = [
        ReconnectingClient(
            deployment.ws_url,
            token=deployment.demo["users"][names[n % 3]]["token"],
            positions={abc: start},
        )
        for n in range(CLIENTS)
    ]
    ledger = SeqLedger(abc)
    stop = asyncio.Event()

    async def send_steadily() -> None:
        n = 0
        while not stop.is_set():
            ledger.owe(await asyncio.to_thread(post_message, deployment, abc, f"m{n}"))
            n += 1
            await asyncio.sleep(0.05)

    def live_counts() -> dict[str, int]:
        return dict(Counter(str(c.instance_id) for c in clients if c.current is not None))

    sender: asyncio.Task[None] | None = None
    try:
        await asyncio.gather(*(c.wait_connected() for c in clients))

        async def counts_now() -> dict[str, int]:
            # Off the event loop: the clients and the sender keep running meanwhile.
            return await asyncio.to_thread(registry_connections, deployment)

        async def spread() -> dict[str, int] | None:
            counts = await counts_now()
            return counts if balanced(counts, 3) else None

        async def on_survivors() -> bool:
            counts = await counts_now()
            return sum(counts.get(i.instance_id, 0) for i in deployment.instances[:2]) == CLIENTS

        await async_wait_until(
            spread,
            timeout=10,
            what="clients spread over three instances",
        )
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
        stop.set()
        await sender
        await async_wait_until(
            lambda: ledger.complete(clients),
            timeout=15,
            interval=0.1,
            what=f"every client complete:\n{ledger.summary(clients)}",
        )
        await asyncio.sleep(0.5)  # not an assertion's wait: a late duplicate gets the chance
        codes = Counter(code for c in clients for code in c.close_codes)
        print(
            f"converged {converged:.1f}s after the restart: {counts}; live {live_counts()}; "
            f"{len(ledger.owed)} messages; closes {dict(codes)}"
        )
        for client in clients:
            report = ledger.report(client)
            assert report.exact, ledger.summary(clients)
        # The survivors handed sockets back with 1012, and the restarted one holds its share.
        assert codes[WS_1012_SERVICE_RESTART] >= 1
        assert counts[victim.instance_id] >= math.floor(CLIENTS / 3 * (1 - THRESHOLD))
        assert all(c.resumes_refused == 0 for c in clients)
    finally:
        stop.set()
        if sender is not None and not sender.done():
            await asyncio.gather(sender, return_exceptions=True)
        await asyncio.gather(*(c.stop() for c in clients))
