"""One redis-py asyncio client per event loop, for the registry and presence timers.

See docs/registry.md. A redis.asyncio connection belongs to the loop that opened it, and this
process runs several loops (Daphne's, ``async_to_sync``'s, the tests' per-test loops), so
clients are kept per loop rather than per process.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from realtime_project.conf import realtime_settings

# What a Redis call may raise when Redis is down, slow or restarting.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


class LoopClients:
    """Lazily built clients for one Redis URL, one per running event loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                client = aioredis.Redis.from_url(
                    self.url,
                    # Explicit, never redis-py 8's silent 5 s default (docs/registry.md).
                    socket_timeout=float(realtime_settings.REDIS_SOCKET_TIMEOUT_SECONDS),
                    socket_connect_timeout=float(realtime_settings.REDIS_CONNECT_TIMEOUT_SECONDS),
                    # One immediate retry survives a connection the server closed (a restart);
                    # more would only delay the switch to degraded mode.
                    retry=Retry(NoBackoff(), 1),
                    decode_responses=True,
                )
                self._clients[loop] = client
            return client

    async def aclose_current(self) -> None:
        """Close the running loop's client (its sockets must be closed on their own loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()
