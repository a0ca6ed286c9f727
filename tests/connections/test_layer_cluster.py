"""The channel layer on a real 3-master Redis Cluster: sharded pub/sub, failover, resubscribe."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from connections.layer import RealtimeChannelLayer
from scripts.procs import RedisClusterSet
from tests.support.async_poll import async_wait_until

pytestmark = pytest.mark.redis


def layer(cluster: RedisClusterSet, name: str) -> RealtimeChannelLayer:
    return RealtimeChannelLayer(
        hosts=cluster.url,
        cluster=True,
        instance_id=name,
        socket_timeout=1.0,
        connect_timeout=0.5,
        probe_interval=0.3,
    )


async def test_groups_cross_instances_on_one_link_per_master(
    redis_cluster: RedisClusterSet,
) -> None:
    a, b = layer(redis_cluster, "inst-a"), layer(redis_cluster, "inst-b")
    try:
        assert len(a.endpoints) == 3 and all(e.sharded for e in a.endpoints)
        receivers = [await b.new_channel() for _ in range(30)]
        for n, channel in enumerate(receivers):
            await b.group_add(f"conv.{n}", channel)
        for n in range(30):
            await a.group_send(f"conv.{n}", {"type": "x", "n": n})
        for n, channel in enumerate(receivers):
            async with asyncio.timeout(5):
                assert (await b.receive(channel))["n"] == n
        # 30 groups and an inbox, but one link (two connections) per master, not per group.
        assert len(b._link().shards) == 3
        assert b.counters()["subscriptions"] >= 30
        # A direct send reaches the other instance's inbox on its slot's master.
        await a.send(receivers[0], {"type": "direct"})
        async with asyncio.timeout(5):
            assert (await b.receive(receivers[0]))["type"] == "direct"
    finally:
        await a.close()
        await b.close()


async def test_a_master_killed_mid_stream_is_replaced_and_subscriptions_restored(
    redis_cluster: RedisClusterSet,
) -> None:
    a, b = layer(redis_cluster, "inst-a"), layer(redis_cluster, "inst-b")
    try:
        channel = await b.new_channel()
        await b.group_add("conv.failover", channel)
        await a.group_send("conv.failover", {"type": "x", "n": 0})
        async with asyncio.timeout(5):
            assert (await b.receive(channel))["n"] == 0
        victim = redis_cluster.master_for_key("rt:g:conv.failover")
        victim.kill()

        async def delivered() -> bool:
            await a.group_send("conv.failover", {"type": "x", "n": 1})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.3):
                    return (await b.receive(channel))["n"] == 1
            return False

        await async_wait_until(delivered, timeout=20, what="delivery through the promoted replica")
        await async_wait_until(
            lambda: b.status == "healthy" and a.status == "healthy", timeout=10, what="healthy"
        )
        assert b.counters()["reconnects"] >= 1
    finally:
        await a.close()
        await b.close()
        victim_restart = [n for n in redis_cluster.nodes if not n.alive()]
        for node in victim_restart:
            node.start()  # rejoins as a replica of the promoted one
        redis_cluster.wait_healthy(timeout=30)
