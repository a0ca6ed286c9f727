"""The Redis registry with two instances sharing one real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import pytest
import redis.asyncio as aioredis

from connections.registry_redis import RedisConnectionRegistry
from scripts.procs import RedisServer
from tests.support.async_poll import async_wait_until

pytestmark = pytest.mark.redis

UA = {"user_agent": "pytest", "remote_addr": "127.0.0.1"}


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[RedisConnectionRegistry, ...]]:
    a = RedisConnectionRegistry(redis_url=redis_url, instance_id="inst-a", ttl_seconds=0.5)
    b = RedisConnectionRegistry(redis_url=redis_url, instance_id="inst-b", ttl_seconds=0.5)
    await a.heartbeat()
    await b.heartbeat()
    yield a, b
    await a.close()
    await b.close()


async def test_user_connections_span_instances(pair: tuple[RedisConnectionRegistry, ...]) -> None:
    a, b = pair
    await a.register(connection_id="c1", user_id="42", metadata=UA)
    await b.register(connection_id="c2", user_id="42", metadata={"user_agent": "phone"})
    await b.register(connection_id="c3", user_id="7", metadata={})

    seen_from_a = await a.user_connections("42")
    assert [(c.connection_id, c.instance_id) for c in seen_from_a] == [
        ("c1", "inst-a"),
        ("c2", "inst-b"),
    ]
    assert seen_from_a[1].metadata == {"user_agent": "phone"}
    assert await b.user_connection_count("42") == 2
    assert await a.users_connection_counts(["42", "7", "nobody"]) == {
        "42": 2,
        "7": 1,
        "nobody": 0,
    }
    assert [c.connection_id for c in await a.instance_connections("inst-b")] == ["c2", "c3"]
    assert a.local_connection_count() == 1

    entry = seen_from_a[1].to_dict()
    assert set(entry) == {
        "connection_id",
        "instance_id",
        "connected_at",
        "last_seen",
        "expires_at",
        "metadata",
    }
    assert datetime.fromisoformat(entry["expires_at"]) > datetime.fromisoformat(
        entry["connected_at"]
    )

    stats = await a.stats()
    assert stats["total_connections"] == 3
    assert stats["unique_users"] == 2
    assert {(i["instance_id"], i["connections"], i["status"]) for i in stats["instances"]} == {
        ("inst-a", 1, "alive"),
        ("inst-b", 2, "alive"),
    }


async def test_unregister_returns_connections_left_anywhere(
    pair: tuple[RedisConnectionRegistry, ...],
) -> None:
    a, b = pair
    await a.register(connection_id="c1", user_id="42", metadata={})
    await b.register(connection_id="c2", user_id="42", metadata={})
    assert await a.unregister(connection_id="c1", user_id="42") == 1
    assert await b.unregister(connection_id="c2", user_id="42") == 0
    assert await a.user_connections("42") == []
    assert (await a.stats())["unique_users"] == 0


async def test_touch_is_flushed_by_the_heartbeat(pair: tuple[RedisConnectionRegistry, ...]) -> None:
    a, b = pair
    first = await a.register(connection_id="c1", user_id="42", metadata={})

    async def touched() -> bool:
        await a.touch(connection_id="c1")
        return a.local_connections()[0].last_seen > first.last_seen

    await async_wait_until(touched, what="a later last_seen")
    before = (await b.instance_connections("inst-a"))[0].last_seen
    assert before == first.last_seen
    await a.heartbeat()
    after = (await b.instance_connections("inst-a"))[0].last_seen
    assert after == a.local_connections()[0].last_seen > first.last_seen


async def test_lapsed_lease_is_reaped_by_a_survivor(
    pair: tuple[RedisConnectionRegistry, ...],
) -> None:
    a, b = pair
    await a.register(connection_id="c1", user_id="42", metadata={})
    await b.register(connection_id="c2", user_id="42", metadata={})
    await b.register(connection_id="c3", user_id="7", metadata={})

    # b stops beating (a crash); a keeps beating until b's lease has lapsed.
    async def b_is_dead() -> bool:
        await a.heartbeat()
        return any(i["status"] == "dead" for i in (await a.stats())["instances"])

    await async_wait_until(b_is_dead, timeout=5, what="inst-b's lease to lapse")
    assert await a.user_connection_count("42") == 1  # dead instances never count

    assert await a.reap_dead_instances() == ["42", "7"]
    assert [c.connection_id for c in await a.user_connections("42")] == ["c1"]
    stats = await a.stats()
    assert [i["instance_id"] for i in stats["instances"]] == ["inst-a"]
    assert stats["total_connections"] == 1
    assert await a.reap_dead_instances() == []


async def test_only_one_reaper_wins(redis_url: str) -> None:
    regs = [
        RedisConnectionRegistry(redis_url=redis_url, instance_id=f"i{n}", ttl_seconds=0.3)
        for n in range(3)
    ]
    try:
        for reg in regs:
            await reg.heartbeat()
        await regs[2].register(connection_id="c", user_id="9", metadata={})

        async def lapsed() -> bool:
            await regs[0].heartbeat()
            await regs[1].heartbeat()
            return any(i["status"] == "dead" for i in (await regs[0].stats())["instances"])

        await async_wait_until(lapsed, timeout=5, what="i2 to lapse")
        import asyncio

        results = await asyncio.gather(regs[0].reap_dead_instances(), regs[1].reap_dead_instances())
        assert sorted(results) == [[], ["9"]]
    finally:
        for reg in regs:
            await reg.close()


async def test_reaped_but_alive_instance_registers_again(
    pair: tuple[RedisConnectionRegistry, ...],
) -> None:
    a, b = pair
    await b.register(connection_id="c2", user_id="42", metadata={})

    async def b_is_dead() -> bool:
        await a.heartbeat()
        return any(i["status"] == "dead" for i in (await a.stats())["instances"])

    await async_wait_until(b_is_dead, timeout=5, what="inst-b's lease to lapse")
    assert await a.reap_dead_instances() == ["42"]
    # b was only stalled: its next heartbeat finds its lease gone and writes its sockets again.
    await b.heartbeat()
    assert [c.instance_id for c in await a.user_connections("42")] == ["inst-b"]


async def test_redis_restarted_empty_is_refilled_by_heartbeat(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    a = RedisConnectionRegistry(redis_url=server.url, instance_id="inst-a", ttl_seconds=5)
    b = RedisConnectionRegistry(redis_url=server.url, instance_id="inst-b", ttl_seconds=5)
    try:
        await a.register(connection_id="c1", user_id="42", metadata=UA)
        await b.register(connection_id="c2", user_id="42", metadata={})
        await a.heartbeat()
        await b.heartbeat()

        server.restart()  # no persistence: every key is gone
        assert (await a.stats())["total_connections"] == 0

        await a.heartbeat()
        await b.heartbeat()
        stats = await a.stats()
        assert stats["total_connections"] == 2
        connections = await b.user_connections("42")
        assert [(c.connection_id, c.metadata) for c in connections] == [("c1", UA), ("c2", {})]
    finally:
        await a.close()
        await b.close()


async def test_redis_down_never_raises_and_local_truth_is_replayed(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    a = RedisConnectionRegistry(redis_url=server.url, instance_id="inst-a", ttl_seconds=5)
    try:
        await a.heartbeat()
        await a.register(connection_id="gone", user_id="1", metadata={})
        server.stop()

        info = await a.register(connection_id="c1", user_id="42", metadata={})
        assert info.instance_id == "inst-a"
        assert await a.unregister(connection_id="gone", user_id="1") == 0
        assert a.degraded
        # Reads fall back to what this instance knows.
        assert [c.connection_id for c in await a.user_connections("42")] == ["c1"]
        assert (await a.stats())["total_connections"] == 1
        await a.heartbeat()  # fails quietly
        assert await a.check(0.2) is False

        server.start()  # same port, empty
        await async_wait_until(lambda: a.check(0.5), timeout=5, what="Redis back")
        await a.heartbeat()
        assert not a.degraded
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        try:
            assert await client.hkeys(a.key_conns("inst-a")) == ["c1"]
            assert await client.hgetall(a.key_user("1")) == {}
            # Every key the registry wrote has a TTL.
            keys = await client.keys("rt:reg:*")
            assert keys
            for key in keys:
                assert await client.pttl(key) > 0, key
        finally:
            await client.aclose()
    finally:
        await a.close()


async def test_counters_are_published_per_instance(
    pair: tuple[RedisConnectionRegistry, ...],
) -> None:
    a, b = pair
    await a.heartbeat(counters={"messages_sent": 5})
    await b.heartbeat(counters={"messages_sent": 2})
    counters = await a.all_instance_counters()
    assert counters["inst-a"]["messages_sent"] == 5
    assert counters["inst-b"]["messages_sent"] == 2
    assert counters["inst-b"]["connections"] == 0


async def test_remove_instance_drains_at_once(pair: tuple[RedisConnectionRegistry, ...]) -> None:
    a, b = pair
    await a.register(connection_id="c1", user_id="42", metadata={})
    await b.register(connection_id="c2", user_id="42", metadata={})
    assert await a.remove_instance() == ["42"]
    assert [c.instance_id for c in await b.user_connections("42")] == ["inst-b"]
    assert [i["instance_id"] for i in (await b.stats())["instances"]] == ["inst-b"]


async def test_a_storm_and_a_mass_close_leave_the_registry_exact(redis_url: str) -> None:
    """1,200 sockets of 400 users connect at once, then all close at once: no pool runs out
    (the client's pool holds 100 connections), nothing falls back to local truth, and Redis
    ends exactly as the sockets left it, each user's offline deadline set once."""
    registry = RedisConnectionRegistry(redis_url=redis_url, instance_id="inst-a", ttl_seconds=5)
    other = RedisConnectionRegistry(redis_url=redis_url, instance_id="inst-b", ttl_seconds=5)
    await registry.heartbeat()
    await other.heartbeat()
    await other.register(connection_id="kept", user_id="u0", metadata={})
    sockets = [(f"c{i}", f"u{i % 400}") for i in range(1200)]
    deadlines = "rt:test:deadlines"
    try:
        await asyncio.gather(
            *(
                registry.register(connection_id=cid, user_id=uid, metadata=UA, max_sockets=20)
                for cid, uid in sockets
            )
        )
        assert not registry.degraded
        raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            assert await raw.hlen(registry.key_conns("inst-a")) == 1200
            assert await registry.user_connection_count("u7") == 3
            assert await registry.user_connection_count("u0") == 4  # one on the other instance

            left = await asyncio.gather(
                *(
                    registry.unregister(
                        connection_id=cid, user_id=uid, offline_deadline=(deadlines, 1e12)
                    )
                    for cid, uid in sockets
                )
            )
            assert not registry.degraded
            # Each user's sockets closed in turn: 2 left, then 1, then none anywhere, except
            # u0, who keeps a socket on the other instance.
            assert sorted(left).count(0) == 399
            assert await raw.exists(registry.key_conns("inst-a")) == 0
            assert await raw.zrange(deadlines, 0, -1) == sorted(f"u{i}" for i in range(1, 400))
            assert [c.connection_id for c in await registry.user_connections("u0")] == ["kept"]
            assert await registry.user_connection_count("u7") == 0
            assert await raw.exists(registry.key_user("u7")) == 0
        finally:
            await raw.aclose()
    finally:
        await registry.close()
        await other.close()
