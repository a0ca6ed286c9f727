"""GET /api/connections/stats: from the registry and the counters instances publish."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import override_settings

from connections.registry import get_registry, reset_registry
from connections.registry_redis import RedisConnectionRegistry
from connections.views import counters_summary


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    reset_registry()
    yield
    reset_registry()


def test_stats_of_the_embedded_single_instance(client_for, staff, alice, bob) -> None:
    with override_settings(
        REALTIME={**settings.REALTIME, "REDIS_URL": None, "INSTANCE_ID": "solo"}
    ):
        registry = get_registry()
        for cid, user in (("c1", alice), ("c2", alice), ("c3", bob)):
            async_to_sync(registry.register)(connection_id=cid, user_id=str(user.pk), metadata={})
        async_to_sync(registry.heartbeat)(counters={"events_delivered_local": 5.0})
        body = client_for(staff).get("/api/connections/stats").json()
    assert body["total_connections"] == 3
    assert body["unique_users"] == 2
    [instance] = body["instances"]
    assert instance["instance_id"] == "solo"
    assert instance["connections"] == 3
    assert instance["status"] == "alive"
    assert datetime.fromisoformat(instance["last_heartbeat"]).utcoffset() is not None
    assert body["messages"]["totals"] == {"events_delivered_local": 5.0}
    assert body["messages"]["per_instance"] == {"solo": {"events_delivered_local": 5.0}}


@pytest.mark.redis
def test_stats_span_instances_through_redis(client_for, staff, redis_url: str) -> None:
    realtime = {**settings.REALTIME, "REDIS_URL": redis_url, "INSTANCE_ID": "inst-a"}
    other = RedisConnectionRegistry(redis_url=redis_url, instance_id="inst-b")

    async def setup() -> None:
        here = get_registry()
        await here.heartbeat()
        await other.heartbeat()
        await here.register(connection_id="a1", user_id="1", metadata={})
        await other.register(connection_id="b1", user_id="1", metadata={})
        await other.register(connection_id="b2", user_id="2", metadata={})
        # The heartbeat carries the layer's counters (and the lease) in one pipeline.
        await here.heartbeat(counters={"events_delivered_local": 3, "events_delivered_remote": 1})
        await other.heartbeat(counters={"events_delivered_local": 4})
        await other.close()
        await here.close()

    with override_settings(REALTIME=realtime):
        async_to_sync(setup)()
        body = client_for(staff).get("/api/connections/stats").json()
    assert body["total_connections"] == 3
    assert body["unique_users"] == 2
    assert {(i["instance_id"], i["connections"], i["status"]) for i in body["instances"]} == {
        ("inst-a", 1, "alive"),
        ("inst-b", 2, "alive"),
    }
    assert body["messages"]["totals"] == {
        "events_delivered_local": 7.0,
        "events_delivered_remote": 1.0,
    }
    per_instance = body["messages"]["per_instance"]
    assert set(per_instance) == {"inst-a", "inst-b"}
    assert per_instance["inst-b"]["events_delivered_local"] == 4.0


def test_a_garbled_counter_is_null_not_invalid_json() -> None:
    summary = counters_summary(
        {"a": {"x": float("nan"), "y": 2.0, "updated_at": 1e9}, "b": {"x": 1.0}}
    )
    assert summary == {
        "totals": {"x": 1.0, "y": 2.0},
        "per_instance": {"a": {"x": None, "y": 2.0, "updated_at": 1e9}, "b": {"x": 1.0}},
    }
