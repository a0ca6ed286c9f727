"""Offline deadlines: a sorted set in Redis shared by every instance. See docs/presence.md.

A deadline is ``user id -> when the user becomes offline``, set when their last socket went
away. The set is split into ``USER_BUCKETS`` sorted sets, each carrying the hash tag of its
users' registry keys, so the registry's connect and disconnect scripts cancel and set a
deadline in the same atomic step on the same slot (``key_for``), on a Redis Cluster too. Every
instance claims due deadlines with one Lua call per bucket that reads and removes them together,
so each deadline is handled by exactly one instance. Without Redis the deadlines live in this
process's memory.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from typing import Any

from connections.topology import (
    REDIS_ERRORS,
    USER_BUCKETS,
    LoopClients,
    RedisTopology,
    bucket_tag,
    user_tag,
)

DEADLINES_PREFIX = "rt:presence:"
# The set outlives any deadline it holds by far; it is renewed by every schedule.
KEY_TTL_MINIMUM_SECONDS = 3600

_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
for i = 1, #due, 2 do
  redis.call('ZREM', KEYS[1], due[i])
end
return due
"""


class DeadlineQueue(ABC):
    @abstractmethod
    async def schedule(
        self, user_id: str, deadline: float, *, only_if_absent: bool = False
    ) -> None:
        """Set (or move) the user's deadline. Never raises for a backend failure."""

    @abstractmethod
    async def cancel(self, user_id: str) -> bool:
        """Drop the user's deadline; True if there was one. Never raises."""

    @abstractmethod
    async def claim_due(self, now: float, *, limit: int = 100) -> list[tuple[str, float]]:
        """Take due deadlines away from every other instance; each is returned once."""

    @abstractmethod
    async def pending(self, user_id: str) -> float | None: ...

    def key_for(self, user_id: str) -> str | None:
        """The Redis key holding the user's deadline (for the registry's scripts), if any."""
        return None

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Release clients."""


class MemoryDeadlineQueue(DeadlineQueue):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadlines: dict[str, float] = {}

    async def schedule(
        self, user_id: str, deadline: float, *, only_if_absent: bool = False
    ) -> None:
        with self._lock:
            if only_if_absent and user_id in self._deadlines:
                return
            self._deadlines[user_id] = deadline

    async def cancel(self, user_id: str) -> bool:
        with self._lock:
            return self._deadlines.pop(user_id, None) is not None

    async def claim_due(self, now: float, *, limit: int = 100) -> list[tuple[str, float]]:
        with self._lock:
            due = sorted((d, u) for u, d in self._deadlines.items() if d <= now)[:limit]
            for _, uid in due:
                del self._deadlines[uid]
        return [(uid, deadline) for deadline, uid in due]

    async def pending(self, user_id: str) -> float | None:
        with self._lock:
            return self._deadlines.get(user_id)


class RedisDeadlineQueue(DeadlineQueue):
    def __init__(
        self,
        *,
        redis_url: str | None = None,
        topology: RedisTopology | None = None,
        prefix: str = DEADLINES_PREFIX,
    ) -> None:
        if topology is None:
            if redis_url is None:
                raise ValueError("a Redis deadline queue needs a topology or a URL")
            topology = RedisTopology(mode="single", urls=(redis_url,))
        self._clients = LoopClients(topology)
        self._prefix = prefix
        # Deadlines that could not reach Redis; sent by the next claim that can.
        self._unsent: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def key_for(self, user_id: str) -> str:
        return f"{self._prefix}{user_tag(user_id)}:deadlines"

    def _bucket_keys(self) -> list[str]:
        return [f"{self._prefix}{bucket_tag(b)}:deadlines" for b in range(USER_BUCKETS)]

    def _ttl_seconds(self, deadline: float) -> int:
        return int(max(KEY_TTL_MINIMUM_SECONDS, (deadline - time.time()) * 2))

    async def schedule(
        self, user_id: str, deadline: float, *, only_if_absent: bool = False
    ) -> None:
        try:
            key = self.key_for(user_id)
            pipe = self._clients.get().pipeline(transaction=False)
            pipe.zadd(key, {user_id: deadline}, nx=only_if_absent)
            pipe.expire(key, self._ttl_seconds(deadline))
            await pipe.execute()
        except REDIS_ERRORS:
            with self._lock:
                self._unsent[user_id] = (deadline, only_if_absent)

    async def cancel(self, user_id: str) -> bool:
        with self._lock:
            held = self._unsent.pop(user_id, None) is not None
        try:
            removed = await self._clients.get().zrem(self.key_for(user_id), user_id)
        except REDIS_ERRORS:
            # The claimer re-checks the registry before writing offline, so a deadline that
            # could not be cancelled only costs a read.
            return held
        return held or bool(removed)

    async def _flush_unsent(self) -> None:
        with self._lock:
            unsent = dict(self._unsent)
            self._unsent.clear()
        for uid, (deadline, only_if_absent) in unsent.items():
            await self.schedule(uid, deadline, only_if_absent=only_if_absent)

    async def claim_due(self, now: float, *, limit: int = 100) -> list[tuple[str, float]]:
        if self._unsent:
            await self._flush_unsent()
        # One script per bucket (each on its own slot), pipelined: one round trip per node.
        pipe = self._clients.get().pipeline(transaction=False)
        for key in self._bucket_keys():
            pipe.eval(_CLAIM_DUE, 1, key, now, limit)
        answers: list[Any] = await pipe.execute()
        claimed: list[tuple[str, float]] = []
        for raw in answers:
            claimed += [(str(raw[i]), float(raw[i + 1])) for i in range(0, len(raw), 2)]
        # ``limit`` bounds each bucket; the earliest are handled first.
        return sorted(claimed, key=lambda item: item[1])

    async def pending(self, user_id: str) -> float | None:
        score = await self._clients.get().zscore(self.key_for(user_id), user_id)
        return None if score is None else float(score)

    async def close(self) -> None:
        await self._clients.aclose_current()
