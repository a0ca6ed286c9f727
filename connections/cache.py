"""Django's ``RedisCache`` on the process's Redis topology (``connections.topology``).

Django's own backend talks to fixed URLs; this client class gives it the Sentinel master
(found again after a failover) or a Redis Cluster client, so the REST throttles' counters live
wherever the rest of the shared state lives. ``settings.CACHES`` comes from
``RedisTopology.cache_config()``.
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class TopologyCacheClient(RedisCacheClient):
    def __init__(
        self,
        servers: list[str],
        *,
        mode: str = "single",
        sentinel_master: str = "mymaster",
        **options: Any,
    ) -> None:
        super().__init__(servers, **options)
        self._servers_list = list(servers)
        self._mode = mode
        self._sentinel_master = sentinel_master
        self._options = {k: v for k, v in options.items() if k.startswith("socket_")}
        self._shared: Any = None

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        if self._mode == "sentinel":
            if self._shared is None:
                from redis.sentinel import Sentinel

                pairs = []
                for server in self._servers_list:
                    host, _, port = server.removeprefix("redis-sentinel://").rpartition(":")
                    pairs.append((host, int(port)))
                self._shared = Sentinel(pairs, **self._options).master_for(
                    self._sentinel_master, **self._options
                )
            return self._shared
        if self._mode == "cluster":
            if self._shared is None:
                from redis.cluster import RedisCluster

                self._shared = RedisCluster.from_url(self._servers_list[0], **self._options)
            return self._shared
        return super().get_client(key, write=write)

    def get_many(self, keys: Any) -> Any:
        if self._mode != "cluster":
            return super().get_many(keys)
        # A cluster refuses an MGET across slots; ask each slot's node.
        client = self.get_client(None)
        values = client.mget_nonatomic(keys)
        pairs = zip(keys, values, strict=True)
        loads = self._serializer.loads  # type: ignore[attr-defined]
        return {k: loads(v) for k, v in pairs if v is not None}


class TopologyRedisCache(RedisCache):
    def __init__(self, server: str | list[str], params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = TopologyCacheClient
