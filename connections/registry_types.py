"""What every connection registry is and answers (docs/registry.md): the socket record, the
per-user limit, the interface both backends implement.

Apart from ``connections.registry`` (the memory backend and ``get_registry()``) so that the
Redis backend builds on it without importing the module that chooses between the two.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from realtime_project.conf import realtime_settings


def utc_from_timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


@dataclass(frozen=True, slots=True)  # one per socket: no instance dict
class ConnectionInfo:
    connection_id: str
    user_id: str
    instance_id: str
    connected_at: datetime
    last_seen: datetime
    expires_at: datetime
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The shape of one entry of ``GET /api/connections/info``."""
        return {
            "connection_id": self.connection_id,
            "instance_id": self.instance_id,
            "connected_at": self.connected_at.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "metadata": dict(self.metadata),
        }


class SocketLimitReached(Exception):
    """A connect refused because the user already holds ``MAX_SOCKETS_PER_USER`` sockets."""

    def __init__(self, user_id: str, count: int) -> None:
        super().__init__(f"user {user_id} already holds {count} sockets")
        self.user_id = user_id
        self.count = count


class ConnectionRegistry(ABC):
    """The interface both backends share, plus the local bookkeeping they both need."""

    def __init__(self, *, instance_id: str, ttl_seconds: float | None = None) -> None:
        self.instance_id = instance_id
        self._ttl_override = ttl_seconds
        # The local truth: sockets held by this process, whatever Redis says.
        self._local: dict[str, ConnectionInfo] = {}
        # A user's connection ids here: a few at most (MAX_SOCKETS_PER_USER, 20), nearly
        # always one, so a tuple (48 B) rather than a set (216 B) per user.
        self._by_user: dict[str, tuple[str, ...]] = {}
        self._last_heartbeat = time.time()

    @property
    def ttl_seconds(self) -> float:
        if self._ttl_override is not None:
            return self._ttl_override
        return realtime_settings.CONNECTION_TTL_SECONDS

    # -- local bookkeeping -------------------------------------------------------------------

    def _local_stats(self) -> dict[str, Any]:
        """``stats()`` as this process alone knows it (no Redis, or Redis unreachable)."""
        return {
            "total_connections": len(self._local),
            "unique_users": len(self._by_user),
            "instances": [
                {
                    "instance_id": self.instance_id,
                    "connections": len(self._local),
                    "last_heartbeat": utc_from_timestamp(self._last_heartbeat).isoformat(),
                    "status": "alive",
                }
            ],
        }

    def _local_add(
        self, *, connection_id: str, user_id: str, metadata: dict[str, str]
    ) -> ConnectionInfo:
        now = time.time()
        connected_at = utc_from_timestamp(now)  # one object for both: datetimes are immutable
        info = ConnectionInfo(
            connection_id=connection_id,
            user_id=user_id,
            instance_id=self.instance_id,
            connected_at=connected_at,
            last_seen=connected_at,
            expires_at=utc_from_timestamp(now + self.ttl_seconds),
            metadata={str(k): str(v) for k, v in metadata.items()},
        )
        self._local[connection_id] = info
        cids = self._by_user.get(user_id, ())
        if connection_id not in cids:
            self._by_user[user_id] = (*cids, connection_id)
        return info

    def _local_remove(self, *, connection_id: str, user_id: str) -> ConnectionInfo | None:
        info = self._local.pop(connection_id, None)
        owner = info.user_id if info is not None else user_id
        cids = self._by_user.get(owner)
        if cids is not None:
            rest = tuple(c for c in cids if c != connection_id)
            if rest:
                self._by_user[owner] = rest
            else:
                del self._by_user[owner]
        return info

    def _local_touch(self, connection_id: str) -> bool:
        info = self._local.get(connection_id)
        if info is None:
            return False
        self._local[connection_id] = replace(info, last_seen=utc_from_timestamp(time.time()))
        return True

    def _local_user_count(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))

    def _local_for_user(self, user_id: str) -> list[ConnectionInfo]:
        return [self._with_lease(self._local[c]) for c in sorted(self._by_user.get(user_id, ()))]

    def _with_lease(self, info: ConnectionInfo) -> ConnectionInfo:
        return replace(info, expires_at=utc_from_timestamp(self._last_heartbeat + self.ttl_seconds))

    def local_connection_count(self) -> int:
        return len(self._local)

    def local_connections(self) -> list[ConnectionInfo]:
        return [self._with_lease(info) for info in self._local.values()]

    # -- the interface -----------------------------------------------------------------------

    @abstractmethod
    async def register(
        self,
        *,
        connection_id: str,
        user_id: str,
        metadata: dict[str, str],
        max_sockets: int | None = None,
        deadline_key: str | None = None,
    ) -> ConnectionInfo:
        """Record a new live socket of this instance. Never raises for a backend failure.

        With ``max_sockets``, raises ``SocketLimitReached`` when the user already holds that
        many on all instances; the check and the write are one atomic step. ``deadline_key``
        (the presence deadline set of the user's bucket) has the user's offline deadline
        cancelled in the same step, when ``writes_deadlines`` says the backend does that.
        """

    @abstractmethod
    async def unregister(
        self,
        *,
        connection_id: str,
        user_id: str,
        offline_deadline: tuple[str, float] | None = None,
    ) -> int:
        """Forget a socket; return the user's remaining live connections on all instances.

        ``offline_deadline`` (deadline set, when) is set in the same step if that was the
        user's last socket anywhere, when ``writes_deadlines`` says the backend does that.
        """

    @property
    def writes_deadlines(self) -> bool:
        """True when register/unregister carry the offline deadline themselves (Redis up)."""
        return False

    async def touch(self, *, connection_id: str) -> None:
        """Note activity on a socket; Redis learns it at the next heartbeat, in bulk."""
        self._local_touch(connection_id)

    @abstractmethod
    async def user_connections(self, user_id: str) -> list[ConnectionInfo]: ...

    @abstractmethod
    async def user_connection_count(self, user_id: str) -> int: ...

    async def users_connection_counts(self, user_ids: list[str]) -> dict[str, int]:
        """Live connection counts for many users at once (reconciliation)."""
        return {uid: await self.user_connection_count(uid) for uid in user_ids}

    @abstractmethod
    async def instance_connections(self, instance_id: str) -> list[ConnectionInfo]: ...

    @abstractmethod
    async def stats(self) -> dict[str, Any]: ...

    async def instance_connection_counts(self) -> dict[str, int] | None:
        """Live connections of every live instance, for rebalancing (connections/rebalance.py);
        None when the store cannot say (only this process's own view is left)."""
        return {self.instance_id: self.local_connection_count()}

    @abstractmethod
    async def heartbeat(self, *, counters: dict[str, float] | None = None) -> None:
        """Renew this instance's lease and flush last-seen times; replay after a data loss.

        ``counters`` (the layer's delivery counters) replace the published ones, in the same
        round trip as the lease.
        """

    @abstractmethod
    async def reap_dead_instances(self) -> list[str]:
        """Remove the connections of instances whose lease lapsed; return the users affected."""

    @abstractmethod
    async def remove_instance(self) -> None:
        """Drain: remove all of this instance's entries at once."""

    @abstractmethod
    async def check(self, timeout: float) -> bool:  # noqa: ASYNC109 (the health interface)
        """Whether the backing store answers within ``timeout`` seconds."""

    async def check_nodes(self, timeout: float) -> dict[str, bool]:  # noqa: ASYNC109
        """Each store node the registry depends on and whether it answered (one, here)."""
        return {"registry": await self.check(timeout)}

    @abstractmethod
    async def all_instance_counters(self) -> dict[str, dict[str, float]]: ...

    async def close(self) -> None:  # noqa: B027 (optional hook; memory has nothing to close)
        """Release clients (tests; shutdown)."""

    @property
    def degraded(self) -> bool:
        """True while the backing store is unreachable and local truth is waiting to replay."""
        return False
