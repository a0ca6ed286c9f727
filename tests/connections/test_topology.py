"""The registry and the presence deadlines on each topology: one node, a Redis Cluster, Sentinel.

Two registries stand for two instances. The socket limit is one atomic script per connect,
so 40 connects racing with a limit of 20 admit exactly 20 whichever instance they reach.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from connections.registry import SocketLimitReached
from connections.registry_redis import RedisConnectionRegistry
from connections.topology import RedisTopology, user_tag
from presence.timers import RedisDeadlineQueue
from scripts.procs import RedisClusterSet, RedisSentinelSet
from tests.support.async_poll import async_wait_until

pytestmark = pytest.mark.redis

LIMIT = 20


def cluster_topology(cluster: RedisClusterSet) -> RedisTopology:
    return RedisTopology.from_values(redis_url=cluster.url, cluster=True, connect_timeout=0.5)


async def registries(topology: RedisTopology) -> list[RedisConnectionRegistry]:
    pair = [
        RedisConnectionRegistry(topology=topology, instance_id=name, ttl_seconds=5)
        for name in ("inst-a", "inst-b")
    ]
    for registry in pair:
        await registry.heartbeat()
    return pair


async def race(
    regs: list[RedisConnectionRegistry], *, user: str, sockets: int, prefix: str = "c"
) -> int:
    """``sockets`` connects of one user at once, alternating instances; how many got in."""

    async def connect(n: int) -> bool:
        try:
            await regs[n % 2].register(
                connection_id=f"{prefix}{n}", user_id=user, metadata={}, max_sockets=LIMIT
            )
        except SocketLimitReached:
            return False
        return True

    return sum(await asyncio.gather(*(connect(n) for n in range(sockets))))


@pytest.fixture
async def on_cluster(
    redis_cluster: RedisClusterSet,
) -> AsyncIterator[list[RedisConnectionRegistry]]:
    regs = await registries(cluster_topology(redis_cluster))
    yield regs
    for registry in regs:
        await registry.close()


async def test_single_node_limit_is_exact_across_instances(redis_url: str) -> None:
    regs = await registries(RedisTopology.from_values(redis_url=redis_url))
    try:
        assert await race(regs, user="42", sockets=40) == LIMIT
        assert await regs[0].user_connection_count("42") == LIMIT
    finally:
        for registry in regs:
            await registry.close()


async def test_cluster_limit_is_exact_and_counts_span_instances(
    on_cluster: list[RedisConnectionRegistry],
) -> None:
    a, b = on_cluster
    assert await race(on_cluster, user="42", sockets=40) == LIMIT
    assert await a.user_connection_count("42") == LIMIT
    assert {c.instance_id for c in await b.user_connections("42")} == {"inst-a", "inst-b"}
    stats = await a.stats()
    assert stats["total_connections"] == LIMIT
    # A socket that leaves makes room for exactly one more.
    await b.unregister(connection_id="c1", user_id="42")
    assert await race(on_cluster, user="42", sockets=2, prefix="late") == 1


async def test_cluster_disconnect_sets_the_deadline_in_the_same_script(
    on_cluster: list[RedisConnectionRegistry],
) -> None:
    a, b = on_cluster
    queue = RedisDeadlineQueue(topology=a.topology)
    try:
        key = queue.key_for("7")
        assert user_tag("7") in key
        await a.register(connection_id="x", user_id="7", metadata={}, deadline_key=key)
        await b.register(connection_id="y", user_id="7", metadata={}, deadline_key=key)
        assert await a.unregister(connection_id="x", user_id="7", offline_deadline=(key, 1.0)) == 1
        assert await queue.pending("7") is None  # a socket is left on inst-b
        assert await b.unregister(connection_id="y", user_id="7", offline_deadline=(key, 2.0)) == 0
        assert await queue.pending("7") == 2.0
        # A new socket cancels it in its connect script.
        await a.register(connection_id="z", user_id="7", metadata={}, deadline_key=key)
        assert await queue.pending("7") is None
        await queue.schedule("8", 3.0)
        assert await queue.claim_due(time.time()) == [("8", 3.0)]
        assert await queue.claim_due(time.time()) == []
    finally:
        await queue.close()


async def test_cluster_health_names_every_master(on_cluster: list[RedisConnectionRegistry]) -> None:
    nodes = await on_cluster[0].check_nodes(2.0)
    assert len(nodes) == 3 and all(nodes.values()), nodes


async def test_sentinel_registry_survives_a_failover(redis_sentinels: RedisSentinelSet) -> None:
    topology = RedisTopology.from_values(
        redis_url=None, sentinels=redis_sentinels.addresses, connect_timeout=0.5
    )
    assert topology.mode == "sentinel"
    regs = await registries(topology)
    try:
        assert await race(regs, user="5", sockets=30) == LIMIT
        redis_sentinels.master.kill()
        # While no master is known the registry keeps local truth; then it replays into the
        # promoted replica, which already had the entries replicated.

        async def recovered() -> bool:
            for registry in regs:
                await registry.heartbeat()
            return not any(r.degraded for r in regs) and await regs[0].check(0.5)

        await async_wait_until(recovered, timeout=20, what="the promoted replica")
        assert redis_sentinels.current_master_port() == redis_sentinels.replica.port
        assert await regs[1].user_connection_count("5") == LIMIT
    finally:
        for registry in regs:
            await registry.close()
