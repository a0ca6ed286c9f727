"""Every redis-py client and connection of the process is built here; see docs/topology.md.

Plain values in (addresses, URLs, timeouts, pool sizes), so the layer and the apps above it
(``connections.topology``, ``connections.cache``) build their clients in one place without an
import running up. Each builder names the topology it serves: one node, a URL, the master a set
of Sentinels names, a Redis Cluster; the asyncio clients serve the event loops, the ``sync_``
ones Django's cache and the layer's one read of a cluster's slot map at start.

Timeouts are always given: redis-py 8 gives every connection a silent 5 s ``socket_timeout``
that cut channels_redis's blocking reads (its issue 422), so no client here relies on a
default. A blocking read on any of them must stay below the ``socket`` timeout it was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.cluster
import redis.sentinel
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

# A pool's size (per node, for a cluster client) unless told: redis-py 8's own default, which
# it also puts in place of ``max_connections=None`` (so None is no "unbounded"). Explicit here
# so that a library upgrade cannot resize every pool of the process unseen.
POOL_SIZE = 100
# As good as no limit: what redis-py's cluster client itself uses for one.
UNBOUNDED_POOL = 2**31


@dataclass(frozen=True)
class Timeouts:
    """How long a client waits on a socket: ``socket`` for every read and write (None only on a
    connection whose caller bounds each call itself), ``connect`` for the TCP/TLS handshake."""

    socket: float | None
    connect: float


def _retry_once() -> Retry:
    # One immediate retry survives a connection the server closed (a restart); more would only
    # delay the caller's switch to degraded mode.
    return Retry(NoBackoff(), 1)


# -- asyncio -----------------------------------------------------------------------------------


def node_client(
    host: str,
    port: int,
    *,
    timeouts: Timeouts,
    db: int = 0,
    username: str | None = None,
    password: str | None = None,
    tls: bool = False,
    max_connections: int = POOL_SIZE,
) -> aioredis.Redis:
    """A pooled client of one node by address."""
    return aioredis.Redis(
        host=host,
        port=port,
        db=db,
        username=username,
        password=password,
        ssl=tls,
        max_connections=max_connections,
        socket_timeout=timeouts.socket,
        socket_connect_timeout=timeouts.connect,
    )


def url_client(
    url: str,
    *,
    timeouts: Timeouts,
    decode_responses: bool = False,
    retry_once: bool = False,
    max_connections: int = POOL_SIZE,
) -> aioredis.Redis:
    """A pooled client of the node a URL names (``redis://``, ``rediss://``, ``unix://``);
    ``retry_once``: one immediate retry instead of redis-py's backoff."""
    extra: dict[str, Any] = {"retry": _retry_once()} if retry_once else {}
    return aioredis.Redis.from_url(
        url,
        decode_responses=decode_responses,
        max_connections=max_connections,
        **extra,
        socket_timeout=timeouts.socket,
        socket_connect_timeout=timeouts.connect,
    )


def sentinels(addresses: Sequence[tuple[str, int]], *, timeouts: Timeouts) -> Sentinel:
    """The Sentinels themselves, to ask who the master is; the caller closes ``.sentinels``."""
    return Sentinel(
        list(addresses), socket_timeout=timeouts.socket, socket_connect_timeout=timeouts.connect
    )


def sentinel_master_client(
    addresses: Sequence[tuple[str, int]],
    master: str,
    *,
    timeouts: Timeouts,
    sentinel_timeouts: Timeouts | None = None,
    password: str | None = None,
    decode_responses: bool = False,
    retry_once: bool = False,
    max_connections: int = POOL_SIZE,
) -> aioredis.Redis:
    """A client of the master the Sentinels name, asked again on every new connection (so a
    failover moves it). ``sentinel_timeouts`` bound the questions to the Sentinels."""
    extra: dict[str, Any] = {"retry": _retry_once()} if retry_once else {}
    if password is not None:
        extra["password"] = password
    asking = sentinel_timeouts or timeouts
    sentinel = Sentinel(
        list(addresses), socket_timeout=asking.socket, socket_connect_timeout=asking.connect
    )
    master_client: aioredis.Redis = sentinel.master_for(
        master,
        decode_responses=decode_responses,
        max_connections=max_connections,
        **extra,
        socket_timeout=timeouts.socket,
        socket_connect_timeout=timeouts.connect,
    )
    return master_client


def cluster_client(
    seeds: Sequence[tuple[str, int]],
    *,
    timeouts: Timeouts,
    username: str | None = None,
    password: str | None = None,
    tls: bool = False,
    decode_responses: bool = False,
    max_connections: int = POOL_SIZE,
) -> RedisCluster:
    """A cluster client from seed nodes: it reads the slot map and follows MOVED and failovers
    on its own. ``max_connections`` is per node."""
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in seeds],
        username=username,
        password=password,
        ssl=tls,
        decode_responses=decode_responses,
        max_connections=max_connections,
        socket_timeout=timeouts.socket,
        socket_connect_timeout=timeouts.connect,
    )


def cluster_url_client(
    urls: Sequence[str],
    *,
    timeouts: Timeouts,
    decode_responses: bool = False,
    max_connections: int = POOL_SIZE,
) -> RedisCluster:
    """A cluster client from seed URLs; the credentials and TLS of the first one apply."""
    return cluster_client(
        [url_address(url) for url in urls],
        timeouts=timeouts,
        decode_responses=decode_responses,
        max_connections=max_connections,
        **url_auth(urls[0]),
    )


def dedicated_connection(
    host: str,
    port: int,
    *,
    connect_timeout: float,
    username: str | None = None,
    password: str | None = None,
    tls: bool = False,
) -> Connection:
    """One bare connection, outside any pool, for the layer's hot paths (its publisher and its
    subscriber): RESP2, so pub/sub messages arrive as plain arrays (parsed by hiredis), and no
    socket timeout, because the layer bounds every read, write and handshake itself."""
    connection_class = SSLConnection if tls else Connection
    return connection_class(
        host=host,
        port=port,
        username=username,
        password=password,
        protocol=2,
        socket_timeout=None,
        socket_connect_timeout=connect_timeout,
    )


def url_address(url: str) -> tuple[str, int]:
    parsed = parse_url(url)
    return str(parsed.get("host", "127.0.0.1")), int(parsed.get("port", 6379))


def url_auth(url: str) -> dict[str, Any]:
    """The ``username``, ``password`` and ``tls`` a URL gives, those it gives only."""
    parsed = parse_url(url)
    auth: dict[str, Any] = {k: parsed[k] for k in ("username", "password") if parsed.get(k)}
    if parsed.get("connection_class") is SSLConnection:
        auth["tls"] = True
    return auth


# -- sync --------------------------------------------------------------------------------------


def sync_node_client(
    host: str,
    port: int,
    *,
    timeouts: Timeouts,
    username: str | None = None,
    password: str | None = None,
) -> redis.Redis:
    """A blocking client of one node by address."""
    return redis.Redis(
        host=host,
        port=port,
        username=username,
        password=password,
        max_connections=POOL_SIZE,
        socket_timeout=timeouts.socket,
        socket_connect_timeout=timeouts.connect,
    )


def sync_url_client(url: str, *, timeouts: Timeouts) -> redis.Redis:
    """A blocking client, with a pool of its own, of the node a URL names."""
    return redis.Redis.from_url(
        url,
        max_connections=POOL_SIZE,
        socket_timeout=timeouts.socket,
        socket_connect_timeout=timeouts.connect,
    )


def sync_sentinel_master_client(
    addresses: Sequence[tuple[str, int]], master: str, *, timeouts: Timeouts
) -> redis.Redis:
    """A blocking client of the master the Sentinels name (asked again on every connection);
    the Sentinels are asked with the same timeouts."""
    sentinel = redis.sentinel.Sentinel(
        list(addresses), socket_timeout=timeouts.socket, socket_connect_timeout=timeouts.connect
    )
    master_client: redis.Redis = sentinel.master_for(
        master,
        max_connections=POOL_SIZE,
        socket_timeout=timeouts.socket,
        socket_connect_timeout=timeouts.connect,
    )
    return master_client


def sync_cluster_client(url: str, *, timeouts: Timeouts) -> redis.cluster.RedisCluster:
    """A blocking cluster client from one seed URL (it connects to read the slot map at once);
    ``POOL_SIZE`` connections per node."""
    return redis.cluster.RedisCluster.from_url(
        url,
        max_connections=POOL_SIZE,
        socket_timeout=timeouts.socket,
        socket_connect_timeout=timeouts.connect,
    )
