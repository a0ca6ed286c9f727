"""Two real Daphne instances on a Redis Cluster (3 masters, 3 replicas) and on a Sentinel set.

Everything that crosses instances works as on one Redis (typing, messages, presence and its
offline deadline, the registry). Then the Redis master under a busy conversation is killed
mid-stream: its replica is promoted, health says ``degraded`` and then ``healthy``, no socket
is closed, and once healing has run every receiving socket has every message exactly once, in
``seq`` order (docs/topology.md, docs/delivery.md; counted by the shared delivery ledger
against the committed log).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from scripts.deployment import Cluster, RedisKind
from scripts.procs import DaphneInstance, RedisServer
from tests.ops.support import health, open_sockets
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
from tests.support.ws_client import frame_is

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

ENV = {
    **E2E_ENV,
    "HEAL_INTERVAL_SECONDS": "1",
    "RATE_LIMIT_FRAMES_PER_SECOND": "1000",
    "RATE_LIMIT_BURST": "1000",
}


@pytest.fixture(scope="module", params=["cluster", "sentinel"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    kind: RedisKind = request.param
    cluster = Cluster(
        instances=2,
        state_dir=tmp_path_factory.mktemp(f"failover-{kind}"),
        env=ENV,
        with_firestore=False,
        database_url=os.environ.get("DATABASE_URL"),
        redis=kind,
    )
    with service_running(cluster):
        yield cluster


def get(cluster: Cluster, on: DaphneInstance, path: str, user: str) -> Any:
    request = urllib.request.Request(
        f"{on.base_url}{path}",
        headers={"Authorization": f"Token {cluster.demo['users'][user]['token']}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


async def test_cross_instance_typing_messages_presence_and_registry(deployment: Cluster) -> None:
    a, b = deployment.instances
    ab = str(deployment.demo["conversations"]["alice-bob"]["id"])
    bob_id = str(deployment.demo["users"]["bob"]["id"])
    alice, bob, alice_b = await open_sockets(deployment, ("alice", a), ("bob", b), ("alice", b))
    try:
        await bob.request({"type": "typing", "conversation_id": ab, "is_typing": True})
        await alice.recv_until(frame_is("typing", user_id=bob_id, is_typing=True))
        sent = await bob.request({"type": "message", "conversation_id": ab, "body": "over"})
        for socket in (alice, alice_b):
            got = await socket.recv_until(frame_is("message", conversation_id=ab))
            assert got["message"] == sent["message"]
        await bob.request({"type": "status", "status": "away"})
        await alice.recv_until(frame_is("presence", user_id=bob_id, status="away"))
        # The registry (on the cluster's user slot, or the Sentinel master) sees both sockets.
        info = get(deployment, a, "/api/connections/info", "alice")
        assert info["connection_count"] == 2
        assert {c["instance_id"] for c in info["connections"]} == {a.instance_id, b.instance_id}
        # Bob's last socket goes: his offline deadline (on his user bucket's slot) fires after
        # the grace period on whichever instance claims it, and alice hears it on the other.
        await bob.close()
        await alice.recv_until(frame_is("presence", user_id=bob_id, status="offline"), within=8)
    finally:
        for socket in (alice, bob, alice_b):
            await socket.close()


def _victim(deployment: Cluster, conversation_id: str) -> RedisServer:
    if deployment.redis_cluster is not None:
        return deployment.redis_cluster.master_for_key(f"rt:g:conv.{conversation_id}")
    assert deployment.redis_sentinels is not None
    return deployment.redis_sentinels.master


async def test_master_killed_mid_stream_loses_and_duplicates_nothing(deployment: Cluster) -> None:
    a, b = deployment.instances
    abc = str(deployment.demo["conversations"]["alice-bob-carol"]["id"])
    alice_token = deployment.demo["users"]["alice"]["token"]
    start = committed_log(a.base_url, token=alice_token, conversation_id=abc).last_seq
    placements = [("bob", a), ("bob", b), ("carol", a), ("carol", b), ("alice", b)]
    clients = [
        DeliveryClient(
            name=f"{user}@{instance.instance_id}",
            token=deployment.demo["users"][user]["token"],
            conversations=[abc],
            positions={abc: start},
        )
        for user, instance in placements
    ]
    for client, (_, instance) in zip(clients, placements, strict=True):
        await client.connect(instance.ws_url)
    seen: dict[str, list[str]] = {a.instance_id: [], b.instance_id: []}
    stop = asyncio.Event()

    async def watch_health() -> None:
        while not stop.is_set():
            for instance in (a, b):
                status = (await asyncio.to_thread(health, instance.base_url))[1].get("status")
                statuses = seen[instance.instance_id]
                if status and (not statuses or statuses[-1] != status):
                    statuses.append(status)
            await asyncio.sleep(0.05)

    sent = 0

    async def send(n: int) -> None:
        nonlocal sent
        on = (a, b)[n % 2]
        code, body = await asyncio.to_thread(
            rest_call,
            on.base_url,
            "POST",
            f"/api/conversations/{abc}/messages",
            token=alice_token,
            body={"body": f"m{n}"},
        )
        assert code == 201, (code, body)
        sent += 1

    watcher = asyncio.create_task(watch_health())
    victim = _victim(deployment, abc)
    try:
        n = 0
        for _ in range(10):
            await send(n)
            n += 1
        started = time.monotonic()
        victim.kill()

        def recovered() -> bool:
            return all("degraded" in s and s[-1] == "healthy" for s in seen.values())

        async def recovered_while_writing() -> bool:
            nonlocal n
            if recovered():
                return True
            await send(n)
            n += 1
            return False

        # Keep writing through the failover until both instances said degraded, then healthy;
        # a send that fails fails the test at once (retry_on=()).
        try:
            await async_wait_until(
                recovered_while_writing,
                timeout=30,
                interval=0.05,
                what="both instances to say degraded, then healthy",
                retry_on=(),
            )
        except TimeoutError as exc:
            exc.add_note(f"health seen: {seen}")
            raise
        failover_seconds = time.monotonic() - started
        for _ in range(10):
            await send(n)
            n += 1
        # Healing (HEAL_INTERVAL_SECONDS=1) fills whatever pub/sub dropped while the master was
        # down: every client reaches the committed log's end.
        logs = committed_logs(a.base_url, token=alice_token, conversation_ids=[abc])
        assert last_seqs(logs) == {abc: start + sent}
        for client in clients:
            await client.wait_reached(last_seqs(logs), within=15)
        await asyncio.sleep(0.5)  # not an assertion's wait: a late duplicate gets the chance
        report = assert_exactly_once(clients, logs)
        print(f"{deployment.redis_kind}: {sent} messages, failover {failover_seconds:.1f}s, {seen}")
        print(report.describe())
        # One socket each, never closed by the failover.
        assert all(len(c.sockets) == 1 and c.current.open for c in clients)
    finally:
        stop.set()
        await watcher
        for client in clients:
            await client.close()
