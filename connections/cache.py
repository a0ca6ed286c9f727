"""Django's ``RedisCache`` on the process's Redis topology (``connections.topology``).

Django's own backend talks to fixed URLs; this client class gives it the Sentinel master
(found again after a failover) or a Redis Cluster client, so the REST throttles' counters live
wherever the rest of the shared state lives. Every mode's client comes from the process's one
factory (``realtime_layer.clients``). ``settings.CACHES`` comes from
``RedisTopology.cache_config()``.
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

from realtime_layer import clients
from realtime_layer.clients import Timeouts


class TopologyCacheClient(RedisCacheClient):
    def __init__(
        self,
        servers: list[str],
        *,
        mode: str = "single",
        sentinel_master: str = "mymaster",
        socket_timeout: float,
        socket_connect_timeout: float,
        **options: Any,
    ) -> None:
        super().__init__(servers, **options)
        self._servers_list = list(servers)
        self._mode = mode
        self._sentinel_master = sentinel_master
        # Both always given (RedisPlacement.cache_config()): no redis-py default applies.
        self._timeouts = Timeouts(socket=socket_timeout, connect=socket_connect_timeout)
        self._shared: Any = None

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        # One client for the backend's life, whatever the mode: its pool is what Django's own
        # client would have shared between the clients it makes per call.
        if self._shared is None:
            self._shared = self._build_client()
        return self._shared

    def _build_client(self) -> Any:
        if self._mode == "sentinel":
            pairs = []
            for server in self._servers_list:
                host, _, port = server.removeprefix("redis-sentinel://").rpartition(":")
                pairs.append((host, int(port)))
            return clients.sync_sentinel_master_client(
                pairs, self._sentinel_master, timeouts=self._timeouts
            )
        if self._mode == "cluster":
            return clients.sync_cluster_client(self._servers_list[0], timeouts=self._timeouts)
        return clients.sync_url_client(self._servers_list[0], timeouts=self._timeouts)

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
