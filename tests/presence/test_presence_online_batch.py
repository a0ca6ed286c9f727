"""A storm's connects mark their users online in the background, one store read per batch,
writing only those not stored as here already; a write is announced once it is stored."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from connections.registry import MemoryConnectionRegistry
from presence.services import ONLINE_WRITES_AT_ONCE, PresenceService
from presence.store import MemoryPresenceStore, PresenceStoreError, PresenceWrite, StoredPresence
from presence.timers import MemoryDeadlineQueue
from presence.writer import PresenceWriter
from tests.presence.conftest import Announced
from tests.support.async_poll import async_wait_until


class CountingStore(MemoryPresenceStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[int] = []  # users per get_many
        self.written: list[str] = []

    async def get_many(self, user_ids: list[str]) -> dict[str, StoredPresence]:
        self.reads.append(len(user_ids))
        return await super().get_many(user_ids)

    def snapshot(self) -> dict[str, StoredPresence]:
        """What is stored, without counting a read."""
        with self._lock:
            return dict(self._docs)

    async def write(
        self,
        change: PresenceWrite,
        *,
        before_write: Callable[[], Awaitable[None]] | None = None,
    ) -> StoredPresence | None:
        stored = await super().write(change, before_write=before_write)
        if stored is not None:
            self.written.append(change.user_id)
        return stored


def _service(store: CountingStore) -> PresenceService:
    return PresenceService(
        registry=MemoryConnectionRegistry(instance_id="inst-a"),
        store=store,
        deadlines=MemoryDeadlineQueue(),
        grace_seconds=30,
    )


async def _stored(store: CountingStore, user_id: str, status: str, version: int) -> None:
    at = datetime.now(tz=UTC)
    await store.write(PresenceWrite(user_id, status, at, at, version))


async def test_users_already_online_cost_one_read_and_no_write() -> None:
    store = CountingStore()
    users = [str(i) for i in range(150)]
    for uid in users[:140]:
        await _stored(store, uid, "online", 1)  # their instance died a moment ago
    for uid in users[140:145]:
        await _stored(store, uid, "offline", 1)
    store.written.clear()
    service = _service(store)

    for uid in users:
        service.mark_online_soon(user_id=uid)
    service.mark_online_soon(user_id="0")  # a second socket of the same user: no second write

    def all_online() -> bool:
        docs = store.snapshot()
        return all(uid in docs and docs[uid].status == "online" for uid in users)

    await async_wait_until(all_online, what="every user stored online")
    # The offline and the unknown users were written, once each; the others only read.
    assert sorted(store.written, key=int) == users[140:]
    assert sum(store.reads) == 150
    assert len(store.reads) == -(-150 // ONLINE_WRITES_AT_ONCE)


async def test_an_explicit_status_is_kept_by_a_reconnect() -> None:
    store = CountingStore()
    await _stored(store, "7", "busy", 1)
    store.written.clear()
    service = _service(store)
    service.mark_online_soon(user_id="7")
    service.mark_online_soon(user_id="8")  # never seen: written in the same batch
    await async_wait_until(lambda: store.written == ["8"], what="the batch's write")
    assert (await store.get_many(["7"]))["7"].status == "busy"


class LateTimeoutStore(CountingStore):
    """Applies the first write, then answers it as a timeout: what a store slower than the
    client's deadline does (the emulator on a loaded machine)."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts = 1

    async def write(
        self,
        change: PresenceWrite,
        *,
        before_write: Callable[[], Awaitable[None]] | None = None,
    ) -> StoredPresence | None:
        stored = await super().write(change, before_write=before_write)
        if self.timeouts:
            self.timeouts -= 1
            raise PresenceStoreError("deadline exceeded")
        return stored


async def test_a_write_that_landed_after_its_timeout_is_announced_once(
    announced: list[Announced],
) -> None:
    store = LateTimeoutStore()
    service = _service(store)
    service.writer = PresenceWriter(store, retry_max_seconds=0.01)

    await service.set_status(user_id="7", status="away")
    assert store.snapshot()["7"].status == "away"
    assert announced == []  # the caller saw an error: nothing said yet

    async def retried() -> bool:
        await service.retry_pending()
        return not service.is_behind()

    await async_wait_until(retried, what="the held transition retried")
    assert [(a.user_id, a.status) for a in announced] == [("7", "away")]


class GatedStore(CountingStore):
    """Holds the batch's read and the status's write until the test lets each go on."""

    def __init__(self) -> None:
        super().__init__()
        self.read_gate = asyncio.Event()
        self.write_gate = asyncio.Event()
        self.reading = asyncio.Event()
        self.writing = asyncio.Event()

    async def get_many(self, user_ids: list[str]) -> dict[str, StoredPresence]:
        self.reading.set()
        await self.read_gate.wait()
        return await super().get_many(user_ids)

    async def write(
        self,
        change: PresenceWrite,
        *,
        before_write: Callable[[], Awaitable[None]] | None = None,
    ) -> StoredPresence | None:
        if change.status == "away":
            self.writing.set()
            await self.write_gate.wait()
        return await super().write(change, before_write=before_write)


async def test_a_status_set_while_the_online_write_waits_is_what_stays() -> None:
    store = GatedStore()
    service = _service(store)

    service.mark_online_soon(user_id="9")  # the socket connects; its write is queued
    await store.reading.wait()  # the queue reads the stored states, slowly
    setting = asyncio.ensure_future(service.set_status(user_id="9", status="away"))
    await store.writing.wait()  # the user picked "away" after connecting; it is on its way
    store.read_gate.set()
    await service.settle()  # the connect's "online" lands first
    store.write_gate.set()
    await setting

    # The connect's transition is older than the status: the status is what stays.
    assert store.snapshot()["9"].status == "away"
