"""A group's subscription lingers past its last local member (``group_linger``), on real Redis.

What a reconnecting client must see: everything sent to its groups after it joined again,
once; what Redis must see: no SUBSCRIBE for the re-join, no UNSUBSCRIBE at the disconnect, and
the lingering groups unsubscribed later in one write (docs/channel-layer.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import redis

from realtime_layer import RealtimeChannelLayer
from scripts.procs import RedisClusterSet, RedisServer
from tests.support import layers
from tests.support.async_poll import async_wait_until
from tests.support.layers import nothing_within, receive_within

pytestmark = pytest.mark.redis

LINGER = {"group_linger": 30.0}


def make_layer(url: str, instance_id: str, **overrides: object) -> RealtimeChannelLayer:
    """A layer whose groups linger 30 s unless told otherwise."""
    return layers.make_layer(url, instance_id, **{**LINGER, **overrides})


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[RealtimeChannelLayer, RealtimeChannelLayer]]:
    async with layers.layer_pair(redis_url, **LINGER) as both:
        yield both


def calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def subscribers(client: redis.Redis, channel: str, *, sharded: bool = False) -> int:
    verb = ("PUBSUB", "SHARDNUMSUB") if sharded else ("PUBSUB", "NUMSUB")
    reply = client.execute_command(*verb, channel)
    return int(reply[1])


async def test_a_rejoin_while_lingering_sends_no_subscribe_and_misses_nothing(
    pair: tuple[RealtimeChannelLayer, RealtimeChannelLayer], redis_url: str
) -> None:
    a, b = pair
    client = redis.Redis.from_url(redis_url)
    old = await a.new_channel()
    await a.group_add("conv.flap", old)
    subscribes, unsubscribes = calls(client, "subscribe"), calls(client, "unsubscribe")

    await a.group_discard("conv.flap", old)
    # Nobody is a member here now: what the group gets meanwhile is dropped on arrival.
    await b.group_send("conv.flap", {"type": "x", "n": 0, "dedup_key": "e0"})
    assert await nothing_within(a, old)
    assert a.counters()["lingering"] == 1

    new = await a.new_channel()
    await a.group_add("conv.flap", new)
    assert a.counters()["lingering"] == 0
    for n in range(1, 4):
        await b.group_send("conv.flap", {"type": "x", "n": n, "dedup_key": f"e{n}"})

    assert [(await receive_within(a, new))["n"] for _ in range(3)] == [1, 2, 3]
    assert await nothing_within(a, new)
    assert calls(client, "subscribe") == subscribes
    assert calls(client, "unsubscribe") == unsubscribes
    assert subscribers(client, "rt:g:conv.flap") == 1
    client.close()


async def test_lingering_groups_are_unsubscribed_later_in_one_write(redis_url: str) -> None:
    a = make_layer(redis_url, "inst-a", group_linger=0.3)
    client = redis.Redis.from_url(redis_url)
    try:
        members = [await a.new_channel() for _ in range(20)]
        for n, channel in enumerate(members):
            await a.group_add(f"conv.{n}", channel)
        unsubscribes = calls(client, "unsubscribe")

        for n, channel in enumerate(members):
            await a.group_discard(f"conv.{n}", channel)
        assert all(subscribers(client, f"rt:g:conv.{n}") == 1 for n in range(20))

        await async_wait_until(
            lambda: all(subscribers(client, f"rt:g:conv.{n}") == 0 for n in range(20)),
            timeout=3,
            what="the lingering groups unsubscribed",
        )
        assert calls(client, "unsubscribe") == unsubscribes + 1
        assert a.counters()["lingering"] == 0
        assert a.counters()["linger_released"] == 20
        assert subscribers(client, a._inbox_name) == 1  # the inbox is not a group: kept
    finally:
        await a.close()
        client.close()


async def test_the_lingering_set_is_bounded(redis_url: str) -> None:
    a = make_layer(redis_url, "inst-a", group_linger=30.0, group_linger_max=8)
    client = redis.Redis.from_url(redis_url)
    try:
        members = [await a.new_channel() for _ in range(20)]
        for n, channel in enumerate(members):
            await a.group_add(f"conv.{n}", channel)
        for n, channel in enumerate(members):
            await a.group_discard(f"conv.{n}", channel)
            assert a.counters()["lingering"] <= 8

        # The oldest were given up, the newest still linger.
        await async_wait_until(
            lambda: subscribers(client, "rt:g:conv.0") == 0, timeout=2, what="the oldest released"
        )
        assert subscribers(client, "rt:g:conv.19") == 1
        lingering = a.counters()["lingering"]
        assert sum(subscribers(client, f"rt:g:conv.{n}") for n in range(20)) == lingering
    finally:
        await a.close()
        client.close()


async def test_no_linger_unsubscribes_at_once(redis_url: str) -> None:
    a = make_layer(redis_url, "inst-a", group_linger=0)
    client = redis.Redis.from_url(redis_url)
    try:
        member = await a.new_channel()
        await a.group_add("conv.now", member)
        await a.group_discard("conv.now", member)
        await async_wait_until(
            lambda: subscribers(client, "rt:g:conv.now") == 0, timeout=2, what="unsubscribed"
        )
        assert a.counters()["lingering"] == 0
    finally:
        await a.close()
        client.close()


async def test_after_a_redis_restart_lingering_groups_are_not_resubscribed(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    a, b = make_layer(server.url, "inst-a"), make_layer(server.url, "inst-b")
    try:
        gone, kept = await a.new_channel(), await a.new_channel()
        await a.group_add("conv.gone", gone)
        await a.group_add("conv.kept", kept)
        await a.group_discard("conv.gone", gone)
        assert a.counters()["lingering"] == 1

        server.kill()
        await async_wait_until(lambda: a.status == "degraded", timeout=2, what="degraded")
        server.start()
        await async_wait_until(
            lambda: a.status == "healthy" and b.status == "healthy", timeout=3, what="recovery"
        )
        client = redis.Redis.from_url(server.url)
        try:
            assert subscribers(client, "rt:g:conv.kept") == 1
            assert subscribers(client, "rt:g:conv.gone") == 0
            assert a.counters()["lingering"] == 0

            # Joining again after the restart subscribes for real, and is delivered to.
            back = await a.new_channel()
            await a.group_add("conv.gone", back)
            assert subscribers(client, "rt:g:conv.gone") == 1
            await b.group_send("conv.gone", {"type": "x", "dedup_key": "after"})
            await b.group_send("conv.kept", {"type": "x", "dedup_key": "kept"})
            assert (await receive_within(a, back))["dedup_key"] == "after"
            assert (await receive_within(a, kept))["dedup_key"] == "kept"
            assert await nothing_within(a, back)
        finally:
            client.close()
    finally:
        await a.close()
        await b.close()


async def test_on_a_cluster_lingering_groups_are_sunsubscribed_on_their_masters(
    redis_cluster: RedisClusterSet,
) -> None:
    def cluster_layer(name: str, **overrides: object) -> RealtimeChannelLayer:
        options: dict[str, object] = {
            "hosts": redis_cluster.url,
            "cluster": True,
            "instance_id": name,
            "socket_timeout": 1.0,
            "connect_timeout": 0.5,
            "probe_interval": 0.3,
        }
        options.update(overrides)
        return RealtimeChannelLayer(**options)  # type: ignore[arg-type]

    a, b = cluster_layer("inst-a", group_linger=0.3), cluster_layer("inst-b")
    groups = [f"conv.{n}" for n in range(12)]
    masters = {g: redis_cluster.master_for_key(f"rt:g:{g}") for g in groups}
    clients = {g: redis.Redis(host="127.0.0.1", port=masters[g].port) for g in groups}
    try:
        first = [await a.new_channel() for _ in groups]
        for group, channel in zip(groups, first, strict=True):
            await a.group_add(group, channel)
        for group, channel in zip(groups, first, strict=True):
            await a.group_discard(group, channel)
        assert all(subscribers(clients[g], f"rt:g:{g}", sharded=True) == 1 for g in groups)

        # Half of them re-join within the linger: still subscribed, and delivered to once.
        again = [await a.new_channel() for _ in groups[:6]]
        for group, channel in zip(groups[:6], again, strict=True):
            await a.group_add(group, channel)
        await async_wait_until(
            lambda: all(
                subscribers(clients[g], f"rt:g:{g}", sharded=True) == 0 for g in groups[6:]
            ),
            timeout=3,
            what="the lingering groups unsubscribed",
        )
        assert all(subscribers(clients[g], f"rt:g:{g}", sharded=True) == 1 for g in groups[:6])
        for n, group in enumerate(groups[:6]):
            await b.group_send(group, {"type": "x", "n": n, "dedup_key": f"c{n}"})
        for n, channel in enumerate(again):
            assert (await receive_within(a, channel, 5))["n"] == n
            assert await nothing_within(a, channel, 0.05)
        assert a.counters()["linger_released"] == 6
    finally:
        await a.close()
        await b.close()
        for client in clients.values():
            client.close()
