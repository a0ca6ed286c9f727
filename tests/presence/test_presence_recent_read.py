"""A write right after the batch read of its user takes that read instead of its own (the
real emulator): one round trip less per user a storm marks online, and the same result when
the document changed in between."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud.firestore_v1.async_document import AsyncDocumentReference

from presence.store import FirestorePresenceStore, PresenceWrite
from scripts.procs import FirestoreEmulator


@pytest.fixture
async def store(firestore: FirestoreEmulator) -> FirestorePresenceStore:
    # A collection of its own: what another test stored is not in the way.
    made = FirestorePresenceStore(
        project_id=firestore.project_id, collection=f"users-{uuid.uuid4().hex[:8]}"
    )
    # A freshly started emulator takes seconds to answer its first call; not what is tested.
    await made._ref("_warm").get(timeout=30)
    return made


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the documents read one at a time (a write's own read)."""
    seen: list[str] = []
    original: Callable[..., Awaitable[Any]] = AsyncDocumentReference.get

    async def counting(self: AsyncDocumentReference, *args: Any, **kwargs: Any) -> Any:
        seen.append(self.id)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(AsyncDocumentReference, "get", counting)
    return seen


def _change(user_id: str, status: str, version: int, **kwargs: Any) -> PresenceWrite:
    at = datetime.now(tz=UTC)
    return PresenceWrite(user_id, status, at, at, version, **kwargs)


async def test_writes_after_the_batch_read_read_nothing_again(
    store: FirestorePresenceStore, reads: list[str]
) -> None:
    await store.write(_change("a", "offline", 1))
    await store.get_many(["a", "b"])  # a offline, b never stored
    reads.clear()

    assert (await store.write(_change("a", "online", 2, only_if_offline=True))) is not None
    assert (await store.write(_change("b", "online", 2, only_if_offline=True))) is not None
    assert reads == []
    stored = await store.get_many(["a", "b"])
    assert {uid: (s.status, s.version) for uid, s in stored.items()} == {
        "a": ("online", 2),
        "b": ("online", 2),
    }


async def test_a_change_in_between_fails_the_write_and_it_is_judged_on_a_fresh_read(
    store: FirestorePresenceStore, firestore: FirestoreEmulator, reads: list[str]
) -> None:
    await store.write(_change("c", "offline", 1))
    await store.write(_change("d", "offline", 1))
    await store.get_many(["c", "d"])
    # Another instance stores newer states meanwhile: a status for c, a document for d that
    # a create would collide with is already there (an update here, for the same effect).
    other = FirestorePresenceStore(project_id=firestore.project_id, collection=store.collection)
    await other.write(_change("c", "away", 5))
    await other.write(_change("d", "busy", 5))
    reads.clear()

    # The batch's read says c and d are offline, so each online write tries at once; the
    # documents changed since, so each fails and reads afresh, which says they are newer.
    assert await store.write(_change("c", "online", 3, only_if_offline=True)) is None
    assert await store.write(_change("d", "online", 3)) is None
    assert reads == ["c", "d"]
    stored = await store.get_many(["c", "d"])
    assert {uid: (s.status, s.version) for uid, s in stored.items()} == {
        "c": ("away", 5),
        "d": ("busy", 5),
    }


async def test_a_change_the_batch_read_would_skip_is_judged_on_a_read_of_its_own(
    store: FirestorePresenceStore, firestore: FirestoreEmulator, reads: list[str]
) -> None:
    await store.write(_change("e", "online", 1))
    await store.get_many(["e"])  # e online
    other = FirestorePresenceStore(project_id=firestore.project_id, collection=store.collection)
    await other.write(_change("e", "offline", 2))  # its grace ran out meanwhile
    reads.clear()

    # By the batch's read this reconnect would be skipped (e was online); a read of its own
    # finds e offline, and the user is stored online again.
    stored = await store.write(_change("e", "online", 3, only_if_offline=True))
    assert stored is not None
    assert stored.status == "online"
    assert reads == ["e"]
