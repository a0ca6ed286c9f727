"""Where Redis is, parsed from plain values (REDIS_URL, REDIS_SENTINELS, REDIS_CLUSTER ...).

Settings build the channel layer's and the cache's configuration from it, so it sits at the
bottom with the settings; ``connections.topology.RedisTopology`` adds the clients that talk
to these nodes (docs/topology.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Self

from realtime_layer.endpoints import redacted_url

Mode = Literal["none", "single", "shards", "sentinel", "cluster"]


def _split_urls(raw: object) -> tuple[str, ...]:
    if not raw:
        return ()
    items = [str(i) for i in raw] if isinstance(raw, list | tuple) else str(raw).split(",")
    return tuple(item.strip() for item in items if item.strip())


def _parse_sentinels(items: object) -> tuple[tuple[str, int], ...]:
    pairs: list[tuple[str, int]] = []
    for item in _split_urls(items):
        host, _, port = item.rpartition(":")
        if not host:
            host, port = port, ""
        pairs.append((host or "127.0.0.1", int(port or 26379)))
    return tuple(pairs)


@dataclass(frozen=True)
class RedisPlacement:
    """Where Redis is, from plain values: no client, no import of any app."""

    mode: Mode
    urls: tuple[str, ...] = ()
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"
    socket_timeout: float = 5.0
    connect_timeout: float = 2.0

    @classmethod
    def from_values(
        cls,
        *,
        redis_url: object,
        sentinels: object = (),
        sentinel_master: str = "mymaster",
        cluster: bool = False,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> Self:
        """The topology the settings describe (settings.py builds the layer's and cache's)."""
        urls = _split_urls(redis_url)
        pairs = _parse_sentinels(sentinels)
        mode: Mode
        if pairs:
            mode = "sentinel"
        elif cluster:
            if not urls:
                raise ValueError("REDIS_CLUSTER=true needs REDIS_URL naming one or more seeds")
            mode = "cluster"
        elif len(urls) > 1:
            mode = "shards"
        elif urls:
            mode = "single"
        else:
            mode = "none"
        return cls(
            mode=mode,
            urls=urls,
            sentinels=pairs,
            sentinel_master=sentinel_master,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
        )

    @property
    def enabled(self) -> bool:
        """False in the embedded single-process mode (no Redis at all)."""
        return self.mode != "none"

    @property
    def cluster(self) -> bool:
        return self.mode == "cluster"

    def describe(self) -> str:
        """The topology for logs and health: node addresses, never a credential."""
        if self.mode == "sentinel":
            where = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel:{self.sentinel_master}@{where}"
        urls = ",".join(redacted_url(url) for url in self.urls)
        return f"{self.mode}:{urls}" if self.enabled else "none"

    # -- other users' configuration -----------------------------------------------------------

    def layer_config(self) -> dict[str, Any]:
        """The channel layer's CONFIG keys that say where Redis is."""
        return {
            "hosts": list(self.urls) or None,
            "sentinels": [f"{h}:{p}" for h, p in self.sentinels],
            "sentinel_master": self.sentinel_master,
            "cluster": self.cluster,
        }

    def cache_config(self) -> dict[str, Any]:
        """Django ``CACHES["default"]`` on this topology (the throttles share it).

        Django's own ``RedisCache`` with a client class that knows Sentinel and Cluster
        (``connections.cache``); the local-memory cache without Redis.
        """
        if not self.enabled:
            return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
        location: list[str] | str
        if self.mode == "sentinel":
            location = [f"redis-sentinel://{h}:{p}" for h, p in self.sentinels]
        else:
            location = self.urls[0]
        return {
            "BACKEND": "connections.cache.TopologyRedisCache",
            "LOCATION": location,
            "KEY_PREFIX": "realtime",
            "OPTIONS": {
                "mode": self.mode,
                "sentinel_master": self.sentinel_master,
                "socket_timeout": self.socket_timeout,
                "socket_connect_timeout": self.connect_timeout,
            },
        }
