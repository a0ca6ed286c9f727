"""A connect cut short while it registers (Daphne kills an application that outlived its client)
leaves no registry entry behind, and the user's offline deadline comes back."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from connections.registry_redis import RedisConnectionRegistry
from presence.services import PresenceService
from presence.store import MemoryPresenceStore
from presence.timers import RedisDeadlineQueue
from tests.support.async_poll import async_wait_until

pytestmark = pytest.mark.redis


async def test_a_registration_cut_short_is_undone(redis_url: str) -> None:
    registry = RedisConnectionRegistry(redis_url=redis_url, instance_id="inst-a", ttl_seconds=5)
    deadlines = RedisDeadlineQueue(redis_url=redis_url)
    service = PresenceService(
        registry=registry, store=MemoryPresenceStore(), deadlines=deadlines, grace_seconds=30
    )
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await registry.heartbeat()
        await service.admit(user_id="7", connection_id="kept", metadata={})
        await service.disconnect(user_id="7", connection_id="kept")  # the grace starts
        deadline_key = deadlines.key_for("7")
        assert deadline_key is not None
        assert await raw.zscore(deadline_key, "7") is not None

        cut = asyncio.ensure_future(service.admit(user_id="7", connection_id="cut", metadata={}))
        await asyncio.sleep(0)  # its script is queued for the next pipeline
        cut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cut

        async def undone() -> bool:
            return (
                registry.local_connection_count() == 0
                and not await raw.exists(registry.key_user("7"))
                and not await raw.hexists(registry.key_conns("inst-a"), "cut")
                and await raw.zscore(deadline_key, "7") is not None
            )

        await async_wait_until(undone, what="the cut registration undone, the deadline back")
    finally:
        await raw.aclose()
        await service.close()
        await registry.close()
