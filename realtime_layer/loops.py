"""What the layer holds per event loop; see docs/channel-layer.md.

Redis sockets belong to one event loop each, so every loop that uses the layer gets a
``LoopLink``: its shard links (one per Redis node), its group membership refcounts, a small
redis-py pool for health checks, and a pool for named channels (their lists block in BLPOP, one
connection per waiting receiver).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from realtime_layer.endpoints import RedisEndpoint
from realtime_layer.links import LayerCallbacks, LinkSettings, ShardLink


class LoopLink:
    """Everything the layer holds for one event loop: its shard links and membership refs."""

    def __init__(
        self,
        *,
        endpoints: list[RedisEndpoint],
        settings: LinkSettings,
        layer: LayerCallbacks,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.settings = settings
        self.endpoints = endpoints
        self.shards = [
            ShardLink(endpoint=endpoint, settings=settings, layer=layer, loop_link=self)
            for endpoint in endpoints
        ]
        # group -> channels homed on this loop that are members (the subscription refcount).
        self.group_members: dict[str, set[str]] = {}
        # Cluster: the slot map this loop's links follow, and channels a node refused (MOVED)
        # that wait for the new map to say where they go.
        self.map_version = 0
        self.misrouted: set[bytes] = set()
        self._layer = layer
        self._clients: list[aioredis.Redis] | None = None
        self._named: list[aioredis.Redis] | None = None

    def add_shard(self, endpoint: RedisEndpoint) -> None:
        """A link to a master a resharding added (indexes of the others never change)."""
        self.shards.append(
            ShardLink(endpoint=endpoint, settings=self.settings, layer=self._layer, loop_link=self)
        )
        for pools, limit in ((self._clients, 4), (self._named, None)):
            if pools is not None and len(pools) < len(self.shards):
                pools.append(
                    endpoint.client(
                        socket_timeout=self.settings.socket_timeout,
                        connect_timeout=self.settings.connect_timeout,
                        max_connections=limit,
                    )
                )

    @property
    def alive(self) -> bool:
        return not self.closed and not self.loop.is_closed()

    def clients(self) -> list[aioredis.Redis]:
        if self._clients is None:
            self._clients = [
                endpoint.client(
                    socket_timeout=self.settings.socket_timeout,
                    connect_timeout=self.settings.connect_timeout,
                )
                for endpoint in self.endpoints
            ]
        return self._clients

    def named_client(self, node: int) -> aioredis.Redis:
        """The pool for named channels on one node (each BLPOP holds a connection): redis-py's
        default size on a node or a Sentinel master, no limit on a cluster (clients.POOL_SIZE)."""
        if self._named is None:
            self._named = [
                endpoint.client(
                    socket_timeout=self.settings.socket_timeout,
                    connect_timeout=self.settings.connect_timeout,
                    max_connections=None,
                )
                for endpoint in self.endpoints
            ]
        return self._named[node]

    async def close(self) -> None:
        self.closed = True
        for shard in self.shards:
            await shard.close()
        for pools in (self._clients, self._named):
            for client in pools or ():
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._clients = self._named = None


def run_on_loop(link: LoopLink, make: Callable[[], Any]) -> asyncio.Future[Any]:
    """Run a coroutine on another thread's loop and return an awaitable for this one."""
    future = asyncio.run_coroutine_threadsafe(make(), link.loop)
    return asyncio.wrap_future(future)
