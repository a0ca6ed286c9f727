"""Presence services: online from the first socket, offline after the grace. See docs/presence.md.

The functions at the bottom are the interface the consumer and the views call; they delegate
to the process's ``PresenceService``, which tests build with explicit parts to run two
instances in one process. Every function is a coroutine, safe under ``async_to_sync``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connections.registry import ConnectionInfo, ConnectionRegistry, get_registry
from connections.topology import get_topology
from presence.store import (
    STATUSES,
    PresenceStore,
    PresenceStoreError,
    PresenceWrite,
    StoredPresence,
    get_store,
)
from presence.timers import DeadlineQueue, MemoryDeadlineQueue, RedisDeadlineQueue
from presence.writer import PresenceWriter
from realtime_project.conf import realtime_settings

logger = logging.getLogger(__name__)


@dataclass
class PresenceState:
    user_id: str
    status: str
    last_seen: datetime | None
    updated_at: datetime | None


def _now() -> datetime:
    return datetime.now(tz=UTC)


class _VersionClock:
    """Microseconds since the epoch, strictly increasing within this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self, at: datetime) -> int:
        with self._lock:
            self._last = max(self._last + 1, int(at.timestamp() * 1_000_000))
            return self._last


_clock = _VersionClock()


# Clean-ups started for cancelled callers, referenced until they finish.
_background: set[asyncio.Future[None]] = set()


def _in_background(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


# Users marked online at once per event loop by ``mark_online_soon`` (one read of their
# documents, then the writes still needed): a storm of connects makes a steady stream of
# store calls, not a thousand at the same moment.
ONLINE_WRITES_AT_ONCE = 100


@dataclass
class _OnlineQueue:
    # Each user's transition, versioned when the socket connected: a status the user sets
    # after that is newer and must win, however late the queue gets to the write.
    users: dict[str, PresenceWrite] = field(default_factory=dict)
    writer: asyncio.Task[None] | None = None


class PresenceService:
    def __init__(
        self,
        *,
        registry: ConnectionRegistry,
        store: PresenceStore,
        deadlines: DeadlineQueue,
        grace_seconds: float | None = None,
        writer: PresenceWriter | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.deadlines = deadlines
        self.writer = writer or PresenceWriter(store)
        self._grace = grace_seconds
        self._online_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _OnlineQueue] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def grace_seconds(self) -> float:
        if self._grace is not None:
            return self._grace
        return realtime_settings.PRESENCE_GRACE_SECONDS

    def _change(
        self,
        *,
        user_id: str,
        status: str,
        last_seen: datetime | None,
        only_if_offline: bool = False,
    ) -> PresenceWrite:
        at = _now()
        return PresenceWrite(
            user_id=user_id,
            status=status,
            last_seen=last_seen,
            updated_at=at,
            version=_clock.next(at),
            only_if_offline=only_if_offline,
        )

    async def connect(
        self,
        *,
        user_id: str,
        connection_id: str,
        metadata: dict[str, str],
        max_sockets: int | None = None,
    ) -> ConnectionInfo:
        """Register (atomically within ``max_sockets``), cancel the deadline, mark online.

        Raises ``SocketLimitReached`` past the limit. With Redis, the registry's connect
        script cancels the deadline in the same round trip.
        """
        info = await self.admit(
            user_id=user_id,
            connection_id=connection_id,
            metadata=metadata,
            max_sockets=max_sockets,
        )
        await self.mark_online(user_id=user_id)
        return info

    async def admit(
        self,
        *,
        user_id: str,
        connection_id: str,
        metadata: dict[str, str],
        max_sockets: int | None = None,
    ) -> ConnectionInfo:
        """``connect`` without the presence write: the registry entry and the deadline."""
        try:
            info = await self.registry.register(
                connection_id=connection_id,
                user_id=user_id,
                metadata=metadata,
                max_sockets=max_sockets,
                deadline_key=self.deadlines.key_for(user_id),
            )
        except asyncio.CancelledError:
            # The caller was cut short (Daphne kills an application that outlived its client
            # by 10 s) and will never disconnect this socket; its entry may be written all the
            # same, and the user's offline deadline cancelled with it.
            _in_background(self.disconnect(user_id=user_id, connection_id=connection_id))
            raise
        if not self.registry.writes_deadlines or self.deadlines.key_for(user_id) is None:
            await self.deadlines.cancel(user_id)
        return info

    def mark_online_soon(self, *, user_id: str) -> None:
        """``mark_online`` off the caller's path: the connect answers without waiting on the
        store. Users queued on this event loop are written by one task, a bounded number at a
        time, once each however many of their sockets connected meanwhile."""
        loop = asyncio.get_running_loop()
        queue = self._online_queues.get(loop)
        if queue is None:
            queue = self._online_queues[loop] = _OnlineQueue()
        if user_id not in queue.users:  # a second socket meanwhile needs no newer version
            queue.users[user_id] = self._change(
                user_id=user_id, status="online", last_seen=_now(), only_if_offline=True
            )
        if queue.writer is None:
            queue.writer = loop.create_task(self._mark_queued_online(queue))

    async def settle(self) -> None:
        """Wait for this event loop's queued online writes (and what they announce)."""
        queue = self._online_queues.get(asyncio.get_running_loop())
        while queue is not None and queue.writer is not None:
            await asyncio.shield(queue.writer)

    async def _mark_queued_online(self, queue: _OnlineQueue) -> None:
        try:
            while queue.users:
                batch = list(queue.users)[:ONLINE_WRITES_AT_ONCE]
                await self._mark_online_many([queue.users.pop(uid) for uid in batch])
        finally:
            queue.writer = None

    async def _mark_online_many(self, changes: list[PresenceWrite]) -> None:
        """Each of ``changes`` (online, unless stored as here already): one read for them all.

        In a storm nearly every user is stored as online still (their instance died within
        the grace period), and each transition read its document on its own: thousands of
        store calls taking a quarter of the survivor's event loop. Skipping on this read is
        safe: the deadline loop re-checks the registry after every offline write and marks
        online again a user whose socket arrived meanwhile (``process_due``).
        """
        try:
            stored: dict[str, StoredPresence] | None = await self.store.get_many(
                [change.user_id for change in changes]
            )
        except PresenceStoreError:
            stored = None  # each transition goes to the writer, which holds it for retry
        due = [
            change
            for change in changes
            if stored is None
            or self.writer.pending_for(change.user_id) is not None
            or change.applies_over(stored.get(change.user_id))
        ]
        results = await asyncio.gather(
            *(self.writer.apply(change) for change in due), return_exceptions=True
        )
        for change, result in zip(due, results, strict=True):
            if isinstance(result, Exception):
                # The writer keeps what the store could not take; anything else is a bug that
                # must not stop the other users' writes.
                logger.error("presence: marking %s online failed: %r", change.user_id, result)

    async def mark_online(self, *, user_id: str) -> None:
        """Online unless the stored state already says the user is here (online/away/busy)."""
        now = _now()
        await self.writer.apply(
            self._change(user_id=user_id, status="online", last_seen=now, only_if_offline=True)
        )

    async def disconnect(self, *, user_id: str, connection_id: str) -> None:
        deadline = time.time() + self.grace_seconds
        key = self.deadlines.key_for(user_id)
        remaining = await self.registry.unregister(
            connection_id=connection_id,
            user_id=user_id,
            offline_deadline=(key, deadline) if key is not None else None,
        )
        if remaining == 0 and (key is None or not self.registry.writes_deadlines):
            await self.deadlines.schedule(user_id, deadline)

    async def users_lost(self, user_ids: list[str]) -> None:
        """Users whose sockets went with a dead instance: the grace starts now for them."""
        counts = await self.registry.users_connection_counts(user_ids)
        deadline = time.time() + self.grace_seconds
        for uid in user_ids:
            if counts.get(uid, 0) == 0:
                await self.deadlines.schedule(uid, deadline, only_if_absent=True)

    async def set_status(self, *, user_id: str, status: str) -> PresenceState:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
        change = self._change(user_id=user_id, status=status, last_seen=_now())
        await self.writer.apply(change)
        return PresenceState(
            user_id=user_id,
            status=status,
            last_seen=change.last_seen,
            updated_at=change.updated_at,
        )

    async def get_many(self, *, user_ids: list[str]) -> dict[str, PresenceState]:
        unique = list(dict.fromkeys(user_ids))
        try:
            stored = await self.store.get_many(unique)
        except PresenceStoreError:
            stored = await self._from_registry(unique)
        states: dict[str, PresenceState] = {}
        for uid in unique:
            known = stored.get(uid)
            held = self.writer.pending_for(uid)
            if held is not None and held.applies_over(known):
                # Not stored yet, but it is what this instance knows to be newest.
                known = StoredPresence(uid, held.status, held.last_seen, held.updated_at, 0)
            states[uid] = (
                PresenceState(uid, known.status, known.last_seen, known.updated_at)
                if known is not None
                else PresenceState(uid, "offline", None, None)
            )
        return states

    async def _from_registry(self, user_ids: list[str]) -> dict[str, StoredPresence]:
        # The store is down: the registry still knows who has a socket.
        counts = await self.registry.users_connection_counts(user_ids)
        return {
            uid: StoredPresence(uid, "online", None, None, 0) for uid in user_ids if counts.get(uid)
        }

    async def process_due(self, *, limit: int = 100) -> int:
        """Claim due deadlines and write ``offline`` for users still without a socket."""
        claimed = await self.deadlines.claim_due(time.time(), limit=limit)
        written = 0
        for uid, deadline in claimed:
            if await self.registry.user_connection_count(uid) > 0:
                continue
            last_seen = datetime.fromtimestamp(deadline - self.grace_seconds, tz=UTC)
            stored = await self.writer.apply(
                self._change(user_id=uid, status="offline", last_seen=last_seen)
            )
            written += stored is not None
            # A socket that arrived between the re-check and the write saw "online" stored and
            # wrote nothing; put it right with a newer write.
            if await self.registry.user_connection_count(uid) > 0:
                await self.mark_online(user_id=uid)
        return written

    async def retry_pending(self) -> int:
        return await self.writer.retry_due()

    def is_behind(self) -> bool:
        return self.writer.is_behind()

    def pending_count(self) -> int:
        return self.writer.pending_count()

    async def close(self) -> None:
        await self.deadlines.close()
        await self.store.close()


_lock = threading.Lock()
_service: PresenceService | None = None
_service_key: tuple[object, ...] | None = None


def get_presence() -> PresenceService:
    """The process's presence service, rebuilt when its backing settings change (tests)."""
    global _service, _service_key
    registry = get_registry()
    store = get_store()
    topology = get_topology()
    key = (id(registry), id(store), topology)
    with _lock:
        if _service is None or _service_key != key:
            deadlines: DeadlineQueue = (
                RedisDeadlineQueue(topology=topology) if topology.enabled else MemoryDeadlineQueue()
            )
            _service = PresenceService(registry=registry, store=store, deadlines=deadlines)
            _service_key = key
        return _service


def reset_presence() -> None:
    global _service, _service_key
    with _lock:
        _service = None
        _service_key = None


async def presence_connect(
    *,
    user_id: str,
    connection_id: str,
    metadata: dict[str, str],
    max_sockets: int | None = None,
) -> ConnectionInfo:
    """Register the socket, cancel a pending offline deadline, mark online if stored offline.

    Past ``max_sockets`` (checked and written atomically across instances) raises
    ``connections.registry.SocketLimitReached`` and registers nothing.
    """
    return await get_presence().connect(
        user_id=user_id, connection_id=connection_id, metadata=metadata, max_sockets=max_sockets
    )


async def presence_admit(
    *,
    user_id: str,
    connection_id: str,
    metadata: dict[str, str],
    max_sockets: int | None = None,
) -> ConnectionInfo:
    """The registry half of ``presence_connect`` (the handshake waits for it, not Firestore)."""
    return await get_presence().admit(
        user_id=user_id, connection_id=connection_id, metadata=metadata, max_sockets=max_sockets
    )


async def presence_mark_online(*, user_id: str) -> None:
    """The presence half of ``presence_connect``: online unless already stored as here."""
    await get_presence().mark_online(user_id=user_id)


def presence_mark_online_soon(*, user_id: str) -> None:
    """``presence_mark_online`` in the background, coalesced per user: a connect's answer
    does not wait on the store."""
    get_presence().mark_online_soon(user_id=user_id)


async def presence_settle() -> None:
    """Wait until the online writes queued on this event loop are done: whoever ends a loop
    (a test's teardown) leaves no write running behind it."""
    await get_presence().settle()


async def presence_disconnect(*, user_id: str, connection_id: str) -> None:
    """Unregister the socket; after the user's last one anywhere, start the grace period."""
    await get_presence().disconnect(user_id=user_id, connection_id=connection_id)


async def presence_set(*, user_id: str, status: str) -> PresenceState:
    """Set an explicit status; ``ValueError`` for an unknown one. Announced once stored."""
    return await get_presence().set_status(user_id=user_id, status=status)


async def presence_get_many(*, user_ids: list[str]) -> dict[str, PresenceState]:
    """Each user's state; users never seen are offline with no last_seen."""
    return await get_presence().get_many(user_ids=user_ids)


def presence_is_behind() -> bool:
    """True while transitions are waiting for the store (the health check reports degraded)."""
    return get_presence().is_behind()


async def presence_store_check(timeout: float) -> bool:  # noqa: ASYNC109 (the health interface)
    return await get_presence().store.check(timeout)


def presence_counters() -> dict[str, float]:
    """Counters for the metrics endpoint."""
    service = get_presence()
    return {
        "writes": float(service.writer.writes),
        "retries": float(service.writer.retries),
        "pending": float(service.pending_count()),
    }
