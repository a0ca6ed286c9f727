"""Django's cache on each topology, its client from the one factory with the settings' timeouts."""

from __future__ import annotations

from typing import Any

import pytest

from connections.cache import TopologyRedisCache
from connections.topology import RedisTopology
from scripts.procs import RedisClusterSet

pytestmark = pytest.mark.redis


def _cache(topology: RedisTopology) -> TopologyRedisCache:
    config: dict[str, Any] = topology.cache_config()
    return TopologyRedisCache(config["LOCATION"], config)


def _opens_with(client: Any) -> tuple[float, float]:
    options = client.connection_pool.connection_kwargs
    return options["socket_timeout"], options["socket_connect_timeout"]


def _round_trip(cache: TopologyRedisCache) -> None:
    values = {f"throttle:{n}": n for n in range(12)}
    for key, value in values.items():
        cache.set(key, value, timeout=30)
    assert cache.get_many([*values, "absent"]) == values
    assert cache.incr("throttle:3") == 4
    assert cache.add("throttle:3", 0) is False


def test_on_one_node(redis_url: str) -> None:
    topology = RedisTopology.from_values(
        redis_url=redis_url, socket_timeout=1.5, connect_timeout=0.25
    )
    cache = _cache(topology)
    _round_trip(cache)
    client = cache._cache.get_client()
    assert _opens_with(client) == (1.5, 0.25)
    # One client, so one pool, for the backend's life.
    assert cache._cache.get_client(write=True) is client


def test_on_a_cluster_keys_of_every_slot(redis_cluster: RedisClusterSet) -> None:
    topology = RedisTopology.from_values(
        redis_url=redis_cluster.url, cluster=True, socket_timeout=1.5, connect_timeout=0.25
    )
    cache = _cache(topology)
    _round_trip(cache)
    client: Any = cache._cache.get_client()
    assert len(client.get_primaries()) == 3
    assert {_opens_with(node.redis_connection) for node in client.get_nodes()} == {(1.5, 0.25)}
