"""The one Redis client factory: what it builds for each topology, with which timeouts.

Building a client connects nowhere (but the blocking cluster client, which reads the slot map
at once), so most of these read what each client will open its connections with.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.backoff import NoBackoff

from realtime_layer import clients
from realtime_layer.clients import Timeouts
from scripts.procs import RedisClusterSet

TIMEOUTS = Timeouts(socket=1.5, connect=0.25)


def _opens_with(client: Any) -> dict[str, Any]:
    return dict(client.connection_pool.connection_kwargs)


def _retries(options: dict[str, Any]) -> tuple[int, type]:
    retry = options["retry"]
    return retry.get_retries(), type(retry._backoff)


def test_a_url_client_takes_node_and_credentials_from_the_url_and_the_timeouts_given() -> None:
    client = clients.url_client(
        "redis://:secret@10.0.0.7:6380/3", timeouts=TIMEOUTS, decode_responses=True
    )
    options = _opens_with(client)
    assert (options["host"], options["port"], options["db"]) == ("10.0.0.7", 6380, 3)
    assert options["password"] == "secret"
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (1.5, 0.25)
    assert options["decode_responses"] is True
    assert client.connection_pool.max_connections == clients.POOL_SIZE


def test_retry_once_is_one_immediate_retry_instead_of_redis_pys_backoff() -> None:
    once = clients.url_client("redis://h:1", timeouts=TIMEOUTS, retry_once=True)
    assert _retries(_opens_with(once)) == (1, NoBackoff)
    default = clients.url_client("redis://h:1", timeouts=TIMEOUTS)
    assert "retry" not in _opens_with(default)


def test_a_node_client_by_address_with_tls_and_its_own_pool_size() -> None:
    client = clients.node_client(
        "10.0.0.8", 7000, timeouts=TIMEOUTS, db=2, username="u", password="p", tls=True,
        max_connections=4,
    )  # fmt: skip
    options = _opens_with(client)
    assert client.connection_pool.connection_class is SSLConnection
    assert (options["host"], options["port"], options["db"]) == ("10.0.0.8", 7000, 2)
    assert (options["username"], options["password"]) == ("u", "p")
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (1.5, 0.25)
    assert client.connection_pool.max_connections == 4


def test_a_sentinel_master_client_asks_the_sentinels_with_their_own_timeouts() -> None:
    client = clients.sentinel_master_client(
        [("10.0.0.9", 26379), ("10.0.0.10", 26379)],
        "mymaster",
        timeouts=TIMEOUTS,
        sentinel_timeouts=Timeouts(socket=0.25, connect=0.25),
        decode_responses=True,
        retry_once=True,
    )
    pool: Any = client.connection_pool
    assert pool.service_name == "mymaster"
    options = dict(pool.connection_kwargs)
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (1.5, 0.25)
    assert options["decode_responses"] is True
    assert _retries(options) == (1, NoBackoff)
    asked = [_opens_with(sentinel) for sentinel in pool.sentinel_manager.sentinels]
    assert [(o["host"], o["port"]) for o in asked] == [("10.0.0.9", 26379), ("10.0.0.10", 26379)]
    assert {(o["socket_timeout"], o["socket_connect_timeout"]) for o in asked} == {(0.25, 0.25)}


def test_sentinels_are_asked_with_the_masters_timeouts_unless_told() -> None:
    client = clients.sentinel_master_client([("s", 26379)], "m", timeouts=TIMEOUTS)
    pool: Any = client.connection_pool
    asked = _opens_with(pool.sentinel_manager.sentinels[0])
    assert (asked["socket_timeout"], asked["socket_connect_timeout"]) == (1.5, 0.25)
    assert client.connection_pool.max_connections == clients.POOL_SIZE


def test_a_cluster_client_seeds_from_every_url_with_the_first_urls_credentials() -> None:
    client = clients.cluster_url_client(
        ["rediss://user:pw@10.0.1.1:7001", "redis://10.0.1.2:7002"],
        timeouts=TIMEOUTS,
        decode_responses=True,
    )
    assert sorted(client.nodes_manager.startup_nodes) == ["10.0.1.1:7001", "10.0.1.2:7002"]
    options = client.connection_kwargs
    assert options["connection_class"] is SSLConnection
    assert (options["username"], options["password"]) == ("user", "pw")
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (1.5, 0.25)
    assert options["decode_responses"] is True
    assert options["max_connections"] == clients.POOL_SIZE


def test_the_layers_hot_connection_has_no_socket_timeout_and_speaks_resp2() -> None:
    plain = clients.dedicated_connection("10.0.0.7", 6379, connect_timeout=0.25)
    assert type(plain) is Connection
    assert (plain.socket_timeout, plain.socket_connect_timeout) == (None, 0.25)
    assert plain.protocol == 2
    secure = clients.dedicated_connection("10.0.0.7", 6379, connect_timeout=0.25, tls=True)
    assert type(secure) is SSLConnection


def test_blocking_clients_for_djangos_cache_take_the_same_timeouts() -> None:
    node = clients.sync_url_client("redis://10.0.0.7:6380/1", timeouts=TIMEOUTS)
    options = _opens_with(node)
    assert (options["host"], options["port"], options["db"]) == ("10.0.0.7", 6380, 1)
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (1.5, 0.25)
    assert node.connection_pool.max_connections == clients.POOL_SIZE
    master = clients.sync_sentinel_master_client([("s", 26379)], "m", timeouts=TIMEOUTS)
    pool: Any = master.connection_pool
    asked = _opens_with(pool.sentinel_manager.sentinels[0])
    for options in (_opens_with(master), asked):
        assert (options["socket_timeout"], options["socket_connect_timeout"]) == (1.5, 0.25)


@pytest.mark.redis
async def test_a_read_longer_than_the_socket_timeout_fails_as_the_timeout_says(
    redis_url: str,
) -> None:
    client = clients.url_client(redis_url, timeouts=Timeouts(socket=0.2, connect=1.0))
    try:
        assert await client.ping()
        with pytest.raises(redis.exceptions.TimeoutError):
            await client.blpop(["nothing-will-come"], timeout=2)
    finally:
        await client.aclose()


@pytest.mark.redis
def test_a_blocking_cluster_client_reads_the_slot_map_and_keeps_the_timeouts(
    redis_cluster: RedisClusterSet,
) -> None:
    client = clients.sync_cluster_client(redis_cluster.url.split(",")[0], timeouts=TIMEOUTS)
    try:
        assert len(client.get_primaries()) == 3
        for node in client.get_nodes():
            options = _opens_with(node.redis_connection)
            assert (options["socket_timeout"], options["socket_connect_timeout"]) == (1.5, 0.25)
        # Keys on different slots each reach their own master.
        client.mset_nonatomic({f"k{n}": n for n in range(10)})
        assert client.mget_nonatomic([f"k{n}" for n in range(10)]) == [
            str(n).encode() for n in range(10)
        ]
    finally:
        client.close()
