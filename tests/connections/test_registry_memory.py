"""The embedded registry and the process singleton."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import override_settings

from connections.registry import MemoryConnectionRegistry, get_registry, reset_registry
from connections.registry_redis import RedisConnectionRegistry


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    reset_registry()
    yield
    reset_registry()


def realtime(**overrides: object) -> dict[str, object]:
    return {**settings.REALTIME, **overrides}


async def test_memory_registry_answers_like_the_redis_one() -> None:
    with override_settings(REALTIME=realtime(REDIS_URL=None, INSTANCE_ID="solo")):
        registry = get_registry()
        assert isinstance(registry, MemoryConnectionRegistry)
        await registry.register(connection_id="c1", user_id="42", metadata={"user_agent": "x"})
        await registry.register(connection_id="c2", user_id="42", metadata={})
        await registry.register(connection_id="c3", user_id="7", metadata={})
        assert registry.local_connection_count() == 3
        assert [c.connection_id for c in await registry.user_connections("42")] == ["c1", "c2"]
        assert await registry.unregister(connection_id="c1", user_id="42") == 1
        stats = await registry.stats()
        assert stats["total_connections"] == 2
        assert stats["unique_users"] == 2
        assert [(i["instance_id"], i["status"]) for i in stats["instances"]] == [("solo", "alive")]
        assert await registry.reap_dead_instances() == []
        assert await registry.check(0.1) is True


def test_singleton_follows_the_settings() -> None:
    with override_settings(REALTIME=realtime(REDIS_URL=None, INSTANCE_ID="one")):
        first = get_registry()
        assert get_registry() is first
    with override_settings(
        REALTIME=realtime(
            REDIS_URL="redis://127.0.0.1:1/0,redis://127.0.0.1:2/0", INSTANCE_ID="one"
        )
    ):
        second = get_registry()
        assert isinstance(second, RedisConnectionRegistry)
        assert second.instance_id == "one"
