"""Where Redis is: one object, built from settings, that every Redis user of this process reads.

See docs/topology.md. Three topologies, chosen by settings alone:

- ``REDIS_URL`` with one URL, or several (comma-separated): the layer spreads groups over the
  listed nodes by a consistent hash; the registry, the presence deadlines and the throttles'
  cache live on the first node.
- ``REDIS_SENTINELS`` (and ``REDIS_SENTINEL_MASTER``): one master, found through the
  Sentinels and found again after a failover, for everything.
- ``REDIS_CLUSTER=true`` with ``REDIS_URL`` naming one or more seed nodes: a Redis Cluster.
  The layer uses sharded pub/sub (``SPUBLISH``/``SSUBSCRIBE``) per node; every multi-key script
  touches keys of one hash tag (``user_tag``, ``instance_tag``), so it runs on one slot.

The layer (``realtime_layer``), the registry, the presence deadline queue, the cache
(``connections.cache``) and the health check all take their clients and node list from here.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
import zlib
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from realtime_layer import clients
from realtime_layer.clients import Timeouts
from realtime_layer.endpoints import redacted_url
from realtime_project.conf import realtime_settings
from realtime_project.redis_topology import RedisPlacement

# What a Redis call may raise when Redis is down, slow, restarting or failing over.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

# Users' registry keys and offline deadlines are grouped into this many hash tags, so that the
# connect script (socket limit, registry entry, deadline cancel) touches one slot while the
# deadline claimer still has only a handful of sorted sets to scan.
USER_BUCKETS = 16

# redis-py's client type for commands: a plain client, a Sentinel master or a cluster client.
StateClient = aioredis.Redis | RedisCluster


def user_bucket(user_id: str) -> int:
    return zlib.crc32(user_id.encode()) % USER_BUCKETS


def user_tag(user_id: str) -> str:
    """The hash tag of every key about one user (and of its bucket's deadline set)."""
    return bucket_tag(user_bucket(user_id))


def bucket_tag(bucket: int) -> str:
    return "{u" + str(bucket) + "}"


def instance_tag(instance_id: str) -> str:
    """The hash tag of every key about one instance (its lease, connections, counters)."""
    # Braces would end the tag early; an instance id never needs them.
    return "{i:" + instance_id.replace("{", "(").replace("}", ")") + "}"


class RedisTopology(RedisPlacement):
    """Where Redis is (``RedisPlacement``, parsed from plain values at the bottom so that
    settings need not import this app) and the clients that talk to it."""

    @classmethod
    def from_settings(cls) -> RedisTopology:
        return cls.from_values(
            redis_url=realtime_settings.REDIS_URL,
            sentinels=realtime_settings.REDIS_SENTINELS,
            sentinel_master=realtime_settings.REDIS_SENTINEL_MASTER,
            cluster=realtime_settings.REDIS_CLUSTER,
            socket_timeout=realtime_settings.REDIS_SOCKET_TIMEOUT_SECONDS,
            connect_timeout=realtime_settings.REDIS_CONNECT_TIMEOUT_SECONDS,
        )

    # -- clients -----------------------------------------------------------------------------

    @property
    def timeouts(self) -> Timeouts:
        # Explicit, never redis-py 8's silent 5 s default (docs/registry.md).
        return Timeouts(socket=self.socket_timeout, connect=self.connect_timeout)

    def state_client(self) -> StateClient:
        """A new client for the shared state (registry, deadlines): bind it to one loop.

        A plain client on the first URL, the Sentinel master, or a cluster client that follows
        MOVED replies and failovers on its own; all decode replies to ``str``. The plain and
        Sentinel clients retry once at once (a restarted server), no more: the callers switch
        to degraded mode instead.
        """
        if self.mode == "sentinel":
            return clients.sentinel_master_client(
                self.sentinels,
                self.sentinel_master,
                timeouts=self.timeouts,
                # Asking the Sentinels is quick or they are gone: no wait past a connect.
                sentinel_timeouts=Timeouts(
                    socket=self.connect_timeout, connect=self.connect_timeout
                ),
                decode_responses=True,
                retry_once=True,
            )
        if self.mode == "cluster":
            # A failover takes a few seconds to promote a replica; the client re-reads the
            # slot map on MOVED and on connection errors, and the callers keep local truth.
            return clients.cluster_url_client(
                self.urls, timeouts=self.timeouts, decode_responses=True
            )
        if not self.urls:
            raise RuntimeError("no Redis configured")
        return clients.url_client(
            self.urls[0], timeouts=self.timeouts, decode_responses=True, retry_once=True
        )

    async def node_status(self, client: StateClient, *, timeout_seconds: float) -> dict[str, bool]:
        """Every node the shared state depends on, and whether it answered PING in time.

        For a cluster, each master the slot map names (a master that fails over is replaced
        by its replica in the map once the client learns it).
        """
        results: dict[str, bool] = {}
        if isinstance(client, RedisCluster):
            try:
                async with asyncio.timeout(timeout_seconds):
                    await client.initialize()
            except Exception:
                return {redacted_url(self.urls[0]): False}
            nodes = client.get_primaries()

            async def ping(node: Any) -> bool:
                try:
                    async with asyncio.timeout(timeout_seconds):
                        return bool(await client.execute_command("PING", target_nodes=node))
                except Exception:
                    return False

            answers = await asyncio.gather(*(ping(node) for node in nodes))
            for node, answer in zip(nodes, answers, strict=True):
                results[f"{node.host}:{node.port}"] = answer
            if sum(hi - lo + 1 for lo, hi in _slot_ranges(client)) < 16384:
                # Some slots have no master the client knows of: a failover in progress.
                results["slots"] = False
            return results
        name = self.describe() if self.mode == "sentinel" else redacted_url(self.urls[0])
        try:
            async with asyncio.timeout(timeout_seconds):
                results[name] = bool(await client.ping())
        except Exception:
            results[name] = False
        return results


def _slot_ranges(client: RedisCluster) -> list[tuple[int, int]]:
    """The slot ranges the client's current map assigns to some master."""
    slots = client.nodes_manager.slots_cache
    ranges: list[tuple[int, int]] = []
    start: int | None = None
    for slot in range(16384):
        if slots.get(slot):
            if start is None:
                start = slot
        elif start is not None:
            ranges.append((start, slot - 1))
            start = None
    if start is not None:
        ranges.append((start, 16383))
    return ranges


_lock = threading.Lock()
_topology: RedisTopology | None = None
_topology_key: tuple[Any, ...] | None = None


def get_topology() -> RedisTopology:
    """The process's topology, rebuilt when the settings it reads change (tests override them)."""
    global _topology, _topology_key
    key = (
        realtime_settings.REDIS_URL,
        tuple(realtime_settings.REDIS_SENTINELS),
        realtime_settings.REDIS_SENTINEL_MASTER,
        realtime_settings.REDIS_CLUSTER,
        realtime_settings.REDIS_SOCKET_TIMEOUT_SECONDS,
        realtime_settings.REDIS_CONNECT_TIMEOUT_SECONDS,
    )
    with _lock:
        if _topology is None or _topology_key != key:
            _topology = RedisTopology.from_settings()
            _topology_key = key
        return _topology


class LoopClients:
    """Lazily built state clients on one topology, one per running event loop.

    A redis.asyncio connection belongs to the loop that opened it, and this process runs
    several loops (Daphne's, ``async_to_sync``'s, the tests' per-test loops).
    """

    def __init__(self, topology: RedisTopology) -> None:
        self.topology = topology
        self._lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StateClient] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> StateClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                client = self.topology.state_client()
                self._clients[loop] = client
            return client

    async def aclose_current(self) -> None:
        """Close the running loop's client (its sockets must be closed on their own loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()
