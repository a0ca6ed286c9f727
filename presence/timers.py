"""Offline deadlines: a sorted set in Redis shared by every instance. See docs/presence.md.

A deadline is ``user id -> when the user becomes offline``, set when their last socket went
away. Every instance claims due deadlines with one Lua call that reads and removes them
together, so each deadline is handled by exactly one instance. Without Redis the deadlines
live in this process's memory.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from typing import Any

from connections.redis_clients import REDIS_ERRORS, LoopClients

DEADLINES_KEY = "rt:presence:deadlines"
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
    def __init__(self, *, redis_url: str, key: str = DEADLINES_KEY) -> None:
        self._clients = LoopClients(redis_url)
        self._key = key
        # Deadlines that could not reach Redis; sent by the next claim that can.
        self._unsent: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def _ttl_seconds(self, deadline: float) -> int:
        return int(max(KEY_TTL_MINIMUM_SECONDS, (deadline - time.time()) * 2))

    async def schedule(
        self, user_id: str, deadline: float, *, only_if_absent: bool = False
    ) -> None:
        try:
            pipe = self._clients.get().pipeline(transaction=False)
            pipe.zadd(self._key, {user_id: deadline}, nx=only_if_absent)
            pipe.expire(self._key, self._ttl_seconds(deadline))
            await pipe.execute()
        except REDIS_ERRORS:
            with self._lock:
                self._unsent[user_id] = (deadline, only_if_absent)

    async def cancel(self, user_id: str) -> bool:
        with self._lock:
            held = self._unsent.pop(user_id, None) is not None
        try:
            removed = await self._clients.get().zrem(self._key, user_id)
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
        raw: list[Any] = await self._clients.get().eval(_CLAIM_DUE, 1, self._key, now, limit)
        return [(str(raw[i]), float(raw[i + 1])) for i in range(0, len(raw), 2)]

    async def pending(self, user_id: str) -> float | None:
        score = await self._clients.get().zscore(self._key, user_id)
        return None if score is None else float(score)

    async def close(self) -> None:
        await self._clients.aclose_current()
