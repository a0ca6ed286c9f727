"""The connection registry: which sockets are live, on which instance. See docs/registry.md.

``get_registry()`` returns the process's registry: backed by Redis whenever the topology
(``connections.topology``) names one (a URL, Sentinel or a Cluster; ``connections.registry_redis``),
otherwise by this process's own memory. Both keep the
local truth (the sockets this process holds) in memory; the Redis one mirrors it into Redis so
that every instance can answer for every user, and replays it whenever Redis lost it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from connections.registry_redis import RedisConnectionRegistry
from connections.registry_types import (
    ConnectionInfo,
    ConnectionRegistry,
    SocketLimitReached,
    utc_from_timestamp,
)
from connections.topology import get_topology
from realtime_project.conf import realtime_settings


class MemoryConnectionRegistry(ConnectionRegistry):
    """The embedded default: one process is the whole server, so local truth is all truth."""

    def __init__(self, *, instance_id: str, ttl_seconds: float | None = None) -> None:
        super().__init__(instance_id=instance_id, ttl_seconds=ttl_seconds)
        self._counters: dict[str, float] = {}

    async def register(
        self,
        *,
        connection_id: str,
        user_id: str,
        metadata: dict[str, str],
        max_sockets: int | None = None,
        deadline_key: str | None = None,
    ) -> ConnectionInfo:
        # One process, no await between the check and the write: atomic as it stands.
        count = self._local_user_count(user_id)
        if max_sockets is not None and count >= max_sockets:
            raise SocketLimitReached(user_id, count)
        return self._local_add(connection_id=connection_id, user_id=user_id, metadata=metadata)

    async def unregister(
        self,
        *,
        connection_id: str,
        user_id: str,
        offline_deadline: tuple[str, float] | None = None,
    ) -> int:
        info = self._local_remove(connection_id=connection_id, user_id=user_id)
        return self._local_user_count(info.user_id if info else user_id)

    async def user_connections(self, user_id: str) -> list[ConnectionInfo]:
        return self._local_for_user(user_id)

    async def user_connection_count(self, user_id: str) -> int:
        return self._local_user_count(user_id)

    async def instance_connections(self, instance_id: str) -> list[ConnectionInfo]:
        if instance_id != self.instance_id:
            return []
        return sorted(self.local_connections(), key=lambda c: c.connection_id)

    async def stats(self) -> dict[str, Any]:
        return self._local_stats()

    async def heartbeat(self, *, counters: dict[str, float] | None = None) -> None:
        self._last_heartbeat = time.time()
        if counters is not None:
            self._counters = dict(counters)

    async def reap_dead_instances(self) -> list[str]:
        return []

    async def remove_instance(self) -> None:
        self._local.clear()
        self._by_user.clear()

    async def check(self, timeout: float) -> bool:  # noqa: ASYNC109 (the health interface)
        return True

    async def all_instance_counters(self) -> dict[str, dict[str, float]]:
        return {self.instance_id: dict(self._counters)}


__all__ = [
    "ConnectionInfo",
    "ConnectionRegistry",
    "MemoryConnectionRegistry",
    "SocketLimitReached",
    "get_registry",
    "reset_registry",
    "utc_from_timestamp",
]

_lock = threading.Lock()
_registry: ConnectionRegistry | None = None
_registry_key: tuple[object, str] | None = None


def get_registry() -> ConnectionRegistry:
    """The process's registry; rebuilt when the topology or instance id setting changes.

    The Redis backend keeps one client per event loop, so the same registry serves Daphne's
    loop, ``async_to_sync`` loops and the tests' per-test loops.
    """
    global _registry, _registry_key
    topology = get_topology()
    key = (topology, realtime_settings.INSTANCE_ID)
    with _lock:
        if _registry is None or _registry_key != key:
            if topology.enabled:
                _registry = RedisConnectionRegistry(topology=topology, instance_id=key[1])
            else:
                _registry = MemoryConnectionRegistry(instance_id=key[1])
            _registry_key = key
        return _registry


def reset_registry() -> None:
    """Forget the process registry (tests). Its Redis clients are dropped with it."""
    global _registry, _registry_key
    with _lock:
        _registry = None
        _registry_key = None
