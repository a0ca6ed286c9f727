"""The instance's background loops: started once per event loop, stopped cleanly."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from django.conf import settings
from django.test import override_settings

from connections import instance
from connections.registry import get_registry, reset_registry
from tests.support.async_poll import async_wait_until


@pytest.fixture
async def fast_instance(redis_url: str) -> AsyncIterator[str]:
    overrides = {
        **settings.REALTIME,
        "REDIS_URL": redis_url,
        "INSTANCE_ID": "inst-loop",
        "HEARTBEAT_INTERVAL_SECONDS": 0.05,
        "CONNECTION_TTL_SECONDS": 1,
    }
    reset_registry()
    with override_settings(REALTIME=overrides):
        yield redis_url
        await instance.instance_stop()
        await get_registry().close()
    reset_registry()


@pytest.mark.redis
async def test_start_is_idempotent_and_runs_heartbeat_and_extra_loops(fast_instance: str) -> None:
    ticks: list[int] = []

    async def extra_loop() -> None:
        ticks.append(1)

    instance.register_background_task(extra_loop, name="test-extra")
    try:
        assert instance.instance_id() == "inst-loop"
        await instance.instance_start()
        await instance.instance_start()
        assert instance.instance_running()
        await get_registry().register(connection_id="c1", user_id="42", metadata={})

        client = aioredis.Redis.from_url(fast_instance, decode_responses=True)
        try:
            await async_wait_until(
                lambda: client.exists("rt:reg:{i:inst-loop}:lease"), timeout=5, what="the lease"
            )
            # Redis loses everything; the running heartbeat writes the socket back.
            await client.flushall()
            await async_wait_until(
                lambda: client.hexists("rt:reg:{i:inst-loop}:conns", "c1"),
                timeout=5,
                what="re-registration",
            )
        finally:
            await client.aclose()
        assert ticks == [1]  # started once despite two starts
        await instance.instance_stop()
        assert not instance.instance_running()
    finally:
        instance._factories[:] = [f for f in instance._factories if f[0] != "test-extra"]


@pytest.mark.redis
async def test_reap_listeners_hear_about_users_of_dead_instances(fast_instance: str) -> None:
    from connections.registry_redis import RedisConnectionRegistry

    heard: list[list[str]] = []

    async def listener(users: list[str]) -> None:
        heard.append(users)

    dead = RedisConnectionRegistry(redis_url=fast_instance, instance_id="dead", ttl_seconds=1)
    await dead.register(connection_id="x", user_id="5", metadata={})
    await dead.close()
    instance.register_reap_listener(listener)
    try:
        await get_registry().heartbeat()

        async def reaped() -> bool:
            await get_registry().heartbeat()
            await instance.reap_once()
            return bool(heard)

        await async_wait_until(reaped, timeout=5, what="the reap")
        assert heard == [["5"]]
    finally:
        instance._reap_listeners.remove(listener)


@pytest.mark.redis
async def test_heartbeat_publishes_the_layers_counters(fast_instance: str) -> None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    await layer.group_send("conv.heartbeat-test", {"type": "realtime.event", "event": {}})
    await instance.instance_start()

    async def published() -> dict[str, float] | None:
        counters = (await get_registry().all_instance_counters()).get("inst-loop", {})
        return counters if "published" in counters else None

    counters = await async_wait_until(published, timeout=5, what="published counters")
    assert set(layer.counters()) <= set(counters)
