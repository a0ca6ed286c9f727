"""The channel layer on a real 3-master Redis Cluster: sharded pub/sub, failover, resubscribe."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from redis.crc import key_slot

from realtime_layer import RealtimeChannelLayer
from realtime_layer.cluster import ClusterEndpoint, SlotRouter, slot_map_remap
from scripts.procs import (
    CLUSTER_NODE_ARGS,
    RedisClusterSet,
    RedisServer,
    free_cluster_port,
    redis_cli,
    wait_until,
)
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


def _node_id(node: RedisServer) -> str:
    return redis_cli("-p", str(node.port), "CLUSTER", "MYID").strip()


def move_slot(
    cluster: RedisClusterSet, slot: int, source: RedisServer, target: RedisServer
) -> None:
    """Move one (keyless) slot from ``source`` to ``target``, as ``redis-cli --cluster reshard``
    does for each slot: importing, migrating, then the new owner announced to every master."""
    source_id, target_id = _node_id(source), _node_id(target)
    redis_cli("-p", str(target.port), "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
    redis_cli("-p", str(source.port), "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
    others = [n for n in cluster.primaries() if n not in (source, target)]
    for node in (target, source, *others):
        redis_cli("-p", str(node.port), "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)


async def test_a_resharding_after_start_is_followed_without_a_restart(
    redis_cluster: RedisClusterSet,
) -> None:
    a, b = layer(redis_cluster, "inst-a"), layer(redis_cluster, "inst-b")
    moved_key = "rt:g:conv.moved"
    source = redis_cluster.master_for_key(moved_key)
    target = next(n for n in redis_cluster.primaries() if n is not source)
    slot = key_slot(moved_key.encode())
    try:
        moved, stay = await b.new_channel(), await b.new_channel()
        await b.group_add("conv.moved", moved)
        await b.group_add("conv.stay", stay)
        await a.group_send("conv.moved", {"type": "x", "n": 0})
        await a.group_send("conv.stay", {"type": "x", "n": 0})
        async with asyncio.timeout(5):
            assert (await b.receive(moved))["n"] == 0
            assert (await b.receive(stay))["n"] == 0

        move_slot(redis_cluster, slot, source, target)
        assert redis_cluster.master_for_key(moved_key) is target

        async def delivered() -> bool:
            await a.group_send("conv.moved", {"type": "x", "n": 1})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.3):
                    return (await b.receive(moved))["n"] == 1
            return False

        # The publisher hears MOVED, the subscriber's node drops its subscription: both read
        # the slot map again and follow the slot to its new master.
        await async_wait_until(delivered, timeout=10, what="delivery on the slot's new master")
        failures = a.counters()["publish_failures"]
        for n in range(2, 22):
            await a.group_send("conv.moved", {"type": "x", "n": n})
        async with asyncio.timeout(5):
            got = [(await b.receive(moved))["n"] for _ in range(20)]
        assert got == list(range(2, 22))
        assert a.counters()["publish_failures"] == failures
        assert a.counters()["slot_map_refreshes"] >= 1
        assert b.counters()["slot_map_refreshes"] >= 1
        # Still one link per master, and the other groups never noticed.
        assert len(b._link().shards) == 3
        await a.group_send("conv.stay", {"type": "x", "n": 1})
        async with asyncio.timeout(5):
            assert (await b.receive(stay))["n"] == 1
        assert a.status == "healthy" and b.status == "healthy"
    finally:
        await a.close()
        await b.close()
        if redis_cluster.master_for_key(moved_key) is target:
            move_slot(redis_cluster, slot, target, source)
        redis_cluster.wait_healthy(timeout=30)


async def test_a_slot_moved_to_a_master_added_after_start_gets_its_own_link(
    redis_cluster: RedisClusterSet, tmp_path: Path
) -> None:
    seed = redis_cluster.primaries()[0]
    added = RedisServer(
        port=free_cluster_port(), log_dir=tmp_path / "added", extra_args=CLUSTER_NODE_ARGS
    ).start()
    a, b = layer(redis_cluster, "inst-a"), layer(redis_cluster, "inst-b")
    key = "rt:g:conv.to-new"
    source, slot = redis_cluster.master_for_key(key), key_slot(key.encode())
    try:
        redis_cli("--cluster", "add-node", added.address, seed.address)
        added_id = _node_id(added)
        wait_until(
            lambda: all(
                added_id in redis_cli("-p", str(n.port), "CLUSTER", "NODES")
                for n in redis_cluster.primaries()
            ),
            timeout=10,
            what="every master knows the added one",
        )
        channel = await b.new_channel()
        await b.group_add("conv.to-new", channel)
        assert len(b._link().shards) == 3
        move_slot(redis_cluster, slot, source, added)

        async def delivered() -> bool:
            await a.group_send("conv.to-new", {"type": "x", "n": 1})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.3):
                    return (await b.receive(channel))["n"] == 1
            return False

        await async_wait_until(delivered, timeout=10, what="delivery through the added master")
        # Both layers made a fourth link, for the added master, and route the slot to it.
        for instance in (a, b):
            shards = instance._link().shards
            assert len(shards) == 4
            assert shards[3].address == ("127.0.0.1", added.port)
        assert channel_slot_on(b, key) == 3
    finally:
        await a.close()
        await b.close()
        if not _serves(source, slot):
            move_slot(redis_cluster, slot, added, source)
        with contextlib.suppress(Exception):
            redis_cli("--cluster", "del-node", seed.address, _node_id(added))
        added.stop()
        redis_cluster.wait_healthy(timeout=30)


def _serves(node: RedisServer, slot: int) -> bool:
    for line in redis_cli("-p", str(node.port), "CLUSTER", "NODES").splitlines():
        fields = line.split()
        if len(fields) > 8 and "myself" in fields[2]:
            for item in fields[8:]:
                lo, _, hi = item.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return True
    return False


def channel_slot_on(instance: RealtimeChannelLayer, redis_name: str) -> int:
    """The index of the link the layer routes ``redis_name`` to."""
    return instance._ring.node_for(redis_name)


def test_a_remap_keeps_indexes_and_appends_a_new_master() -> None:
    seeds = (("127.0.0.1", 7001),)
    old = [
        ClusterEndpoint(host="127.0.0.1", port=7001, name="m1", seeds=seeds, slots=((0, 8191),)),
        ClusterEndpoint(
            host="127.0.0.1", port=7002, name="m2", seeds=seeds, slots=((8192, 16383),)
        ),
    ]
    table: list[tuple[int, int, tuple[str, int], list[object]]] = [
        (0, 4095, ("127.0.0.1", 7001), []),
        (4096, 8191, ("127.0.0.1", 7003), []),  # a new master took half of m1's slots
        (8192, 16383, ("127.0.0.1", 7002), []),
    ]
    endpoints, addresses = slot_map_remap(old, table)
    assert [e.name for e in endpoints] == ["m1", "m2", "cluster:127.0.0.1:7003"]
    assert [e.slots for e in endpoints] == [((0, 4095),), ((8192, 16383),), ((4096, 8191),)]
    assert addresses == [("127.0.0.1", 7001), ("127.0.0.1", 7002), ("127.0.0.1", 7003)]
    router = SlotRouter(endpoints, "rt")
    assert router.node_for("rt:i:x") in {0, 1, 2}
    # A name whose slot the new master serves routes to the new endpoint.
    name = next(
        f"rt:i:{n}" for n in range(100000) if 4096 <= key_slot(f"rt:i:{n}".encode()) <= 8191
    )
    assert endpoints[router.node_for(name)].port == 7003
