"""Where presence is kept: Firestore, or this process's memory. See docs/presence.md.

This is the only module that imports the Firestore SDK. Writes are ordered by a per-user
``version`` (microseconds since the epoch at the moment the transition was decided): a write
applies only if its version is newer than the stored one, and it is committed with a
precondition on the document's ``update_time`` (or on its absence), so two writers never
contend in a transaction and a late, older write is dropped instead of overwriting.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

from realtime_project.conf import realtime_settings

# The statuses a user can have: the one list, for the store, the REST serializers, the
# ``status`` frame and the ``presence`` event's schema alike.
Status = Literal["online", "away", "busy", "offline"]
STATUSES: Final[tuple[Status, ...]] = get_args(Status)
ACTIVE_STATUSES: Final[tuple[Status, ...]] = ("online", "away", "busy")
# Optimistic writes that lose the precondition race re-read and try again this many times.
WRITE_ATTEMPTS = 5


class PresenceStoreError(Exception):
    """The store could not be reached or did not answer in time."""


@dataclass(frozen=True)
class StoredPresence:
    user_id: str
    status: str
    last_seen: datetime | None
    updated_at: datetime | None
    version: int


@dataclass(frozen=True)
class PresenceWrite:
    """A transition to store. ``only_if_offline`` writes only over a missing/offline state."""

    user_id: str
    status: str
    last_seen: datetime | None
    updated_at: datetime
    version: int
    only_if_offline: bool = False

    def document(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "last_seen": self.last_seen,
            "updated_at": self.updated_at,
            "version": self.version,
        }

    def landed_in(self, stored: StoredPresence | None) -> bool:
        """Whether ``stored`` is this very change: an earlier attempt was written although its
        caller saw an error (a timeout that fired after the server applied it). The version is
        unique to the writing process's clock, so a match is this change and nothing else."""
        return (
            stored is not None and stored.version == self.version and stored.status == self.status
        )

    def applies_over(self, stored: StoredPresence | None) -> bool:
        if stored is None:
            return True
        if stored.version >= self.version:
            return False
        return not (self.only_if_offline and stored.status != "offline")


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _from_document(user_id: str, data: Mapping[str, Any]) -> StoredPresence:
    status = str(data.get("status", "offline"))
    return StoredPresence(
        user_id=user_id,
        status=status if status in STATUSES else "offline",
        last_seen=_as_datetime(data.get("last_seen")),
        updated_at=_as_datetime(data.get("updated_at")),
        version=int(data.get("version") or 0),
    )


class PresenceStore(ABC):
    @abstractmethod
    async def get_many(self, user_ids: list[str]) -> dict[str, StoredPresence]:
        """Stored states of the users that have one."""

    @abstractmethod
    async def write(
        self,
        change: PresenceWrite,
        *,
        before_write: Callable[[], Awaitable[None]] | None = None,
    ) -> StoredPresence | None:
        """Store ``change`` unless the stored state is newer; the new state, or None if skipped.

        ``before_write`` is awaited once, after the change is found to apply and before it is
        written (webhooks hold their event there: docs/webhooks.md).
        """

    @abstractmethod
    async def active_user_ids(self, *, limit: int) -> list[str]:
        """Users stored as online/away/busy (reconciliation)."""

    @abstractmethod
    async def check(self, timeout: float) -> bool:  # noqa: ASYNC109 (the health interface)
        """Whether the store answers within ``timeout`` seconds."""

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Release clients."""


class MemoryPresenceStore(PresenceStore):
    """The embedded default: presence lives in this process, with the same ordering rules."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._docs: dict[str, StoredPresence] = {}
        self.writes = 0

    async def get_many(self, user_ids: list[str]) -> dict[str, StoredPresence]:
        with self._lock:
            return {uid: self._docs[uid] for uid in user_ids if uid in self._docs}

    async def write(
        self,
        change: PresenceWrite,
        *,
        before_write: Callable[[], Awaitable[None]] | None = None,
    ) -> StoredPresence | None:
        current = self._docs.get(change.user_id)
        if before_write is not None and (change.applies_over(current) or change.landed_in(current)):
            await before_write()
        with self._lock:
            current = self._docs.get(change.user_id)
            if change.landed_in(current):
                return current
            if not change.applies_over(current):
                return None
            stored = _from_document(change.user_id, change.document())
            self._docs[change.user_id] = stored
            self.writes += 1
            return stored

    async def active_user_ids(self, *, limit: int) -> list[str]:
        with self._lock:
            active = [uid for uid, doc in self._docs.items() if doc.status in ACTIVE_STATUSES]
        return sorted(active)[:limit]

    async def check(self, timeout: float) -> bool:  # noqa: ASYNC109
        return True


# How long a document ``get_many`` read may stand in for a write's own read of it.
RECENT_READ_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """A document as read: whether it exists, its update time (a write's precondition), and
    what it holds."""

    read_at: float
    exists: bool
    update_time: Any
    stored: StoredPresence | None

    @classmethod
    def of(cls, snap: Any) -> _Snapshot:
        stored = _from_document(snap.id, snap.to_dict() or {}) if snap.exists else None
        return cls(time.monotonic(), snap.exists, snap.update_time, stored)


class FirestorePresenceStore(PresenceStore):
    """Firestore through the SDK's AsyncClient (one per event loop; it works with the emulator)."""

    def __init__(
        self,
        *,
        project_id: str,
        collection: str | None = None,
        timeout_seconds: float | None = None,
    ) -> None:
        self.project_id = project_id
        self._collection = collection
        self._timeout = timeout_seconds
        self._lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        # What ``get_many`` just read, per user, for the write that follows it: see
        # ``_read_recently``.
        self._recent: dict[str, _Snapshot] = {}

    @property
    def collection(self) -> str:
        return self._collection or realtime_settings.PRESENCE_COLLECTION

    @property
    def timeout(self) -> float:
        if self._timeout is not None:
            return self._timeout
        return realtime_settings.PRESENCE_STORE_TIMEOUT_SECONDS

    def _client(self) -> Any:
        from google.cloud import firestore

        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                client = firestore.AsyncClient(project=self.project_id)
                self._clients[loop] = client
            return client

    async def _drop_client(self) -> None:
        # A gRPC channel that saw the server go away backs off for up to minutes before it
        # reconnects; a fresh client connects at once when the store is back.
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.pop(loop, None)
        api = getattr(client, "_firestore_api_internal", None)
        if api is not None:
            # Closing a broken channel may itself fail; the client is discarded either way.
            with contextlib.suppress(Exception):
                await api.transport.close()

    async def _call(self, awaitable: Any) -> Any:
        from google.api_core import exceptions as gexc

        try:
            async with asyncio.timeout(self.timeout):
                return await awaitable
        except (gexc.FailedPrecondition, gexc.Conflict):
            raise
        except (TimeoutError, gexc.GoogleAPIError, OSError) as exc:
            await self._drop_client()
            raise PresenceStoreError(repr(exc)) from exc
        except Exception as exc:
            # grpc.aio errors surface as their own classes when the channel breaks.
            if type(exc).__module__.startswith("grpc"):
                await self._drop_client()
                raise PresenceStoreError(repr(exc)) from exc
            raise

    def _ref(self, user_id: str) -> Any:
        return self._client().collection(self.collection).document(user_id)

    async def get_many(self, user_ids: list[str]) -> dict[str, StoredPresence]:
        if not user_ids:
            return {}
        client = self._client()
        refs = [client.collection(self.collection).document(uid) for uid in user_ids]

        async def read_all() -> dict[str, StoredPresence]:
            found: dict[str, StoredPresence] = {}
            async for snap in client.get_all(refs, retry=None, timeout=self.timeout):
                snapshot = _Snapshot.of(snap)
                if snapshot.stored is not None:
                    found[snap.id] = snapshot.stored
                self._remember(snap.id, snapshot)
            return found

        result: dict[str, StoredPresence] = await self._call(read_all())
        return result

    def _remember(self, user_id: str, snapshot: _Snapshot) -> None:
        recent = self._recent
        recent.pop(user_id, None)  # to the end: the dict stays in the order of the reads
        recent[user_id] = snapshot
        horizon = snapshot.read_at - RECENT_READ_SECONDS
        while recent:
            oldest = next(iter(recent))
            if recent[oldest].read_at >= horizon:
                break
            del recent[oldest]

    def _read_recently(self, user_id: str) -> _Snapshot | None:
        """The document as ``get_many`` read it a moment ago, taken (used once), if it did.

        Marking a storm's users online reads them all in one call, then writes those found
        offline or missing: each write read its document again first, a second round trip per
        user (py-spy: Firestore was 18 % of an instance's loop taking connects of offline
        users). The write's first attempt takes this read instead when the change applies over
        it, and writes under the same precondition as after its own read (the document's update
        time, or that it does not exist yet): a change in between fails it and the next attempt
        reads afresh. Whether to skip a change is still judged on a read of its own.
        """
        snapshot = self._recent.pop(user_id, None)
        if snapshot is None or time.monotonic() - snapshot.read_at > RECENT_READ_SECONDS:
            return None
        return snapshot

    async def write(
        self,
        change: PresenceWrite,
        *,
        before_write: Callable[[], Awaitable[None]] | None = None,
    ) -> StoredPresence | None:
        from google.api_core import exceptions as gexc

        ref = self._ref(change.user_id)
        recent = self._read_recently(change.user_id)
        for _ in range(WRITE_ATTEMPTS):
            if recent is not None and change.applies_over(recent.stored):
                # Only to write (under its precondition), never to skip: a skip is judged on a
                # fresh read, as it always was.
                snap = recent
            else:
                snap = _Snapshot.of(await self._call(ref.get(retry=None, timeout=self.timeout)))
            recent = None
            stored = snap.stored
            if change.landed_in(stored):
                # Announced by the caller as if written now: it never was before.
                if before_write is not None:
                    await before_write()
                return stored
            if not change.applies_over(stored):
                return None
            if before_write is not None:
                await before_write()
                before_write = None
            try:
                if snap.exists:
                    option = self._client().write_option(last_update_time=snap.update_time)
                    await self._call(
                        ref.update(
                            change.document(), option=option, retry=None, timeout=self.timeout
                        )
                    )
                else:
                    await self._call(
                        ref.create(change.document(), retry=None, timeout=self.timeout)
                    )
            except (gexc.FailedPrecondition, gexc.Conflict):
                continue  # another instance wrote in between: judge against its state
            return _from_document(change.user_id, change.document())
        raise PresenceStoreError(f"write for {change.user_id} lost {WRITE_ATTEMPTS} races")

    async def active_user_ids(self, *, limit: int) -> list[str]:
        from google.cloud.firestore_v1 import FieldFilter

        query = (
            self._client()
            .collection(self.collection)
            .where(filter=FieldFilter("status", "in", list(ACTIVE_STATUSES)))
            .limit(limit)
        )
        snaps = await self._call(query.get(retry=None, timeout=self.timeout))
        return sorted(str(snap.id) for snap in snaps)

    async def check(self, timeout: float) -> bool:  # noqa: ASYNC109
        try:
            ref = self._client().collection(self.collection).document("_health")
            async with asyncio.timeout(timeout):
                await ref.get(retry=None, timeout=timeout)
        except Exception:
            await self._drop_client()
            return False
        return True

    async def close(self) -> None:
        await self._drop_client()


_lock = threading.Lock()
_store: PresenceStore | None = None
_store_key: str | None = None


def get_store() -> PresenceStore:
    """The process's store: Firestore if ``FIRESTORE_PROJECT_ID`` is set, else memory."""
    global _store, _store_key
    project = realtime_settings.FIRESTORE_PROJECT_ID
    key = str(project) if project else ""
    with _lock:
        if _store is None or _store_key != key:
            _store = FirestorePresenceStore(project_id=key) if key else MemoryPresenceStore()
            _store_key = key
        return _store


def reset_store() -> None:
    global _store, _store_key
    with _lock:
        _store = None
        _store_key = None
