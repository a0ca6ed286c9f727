"""The module-level presence services, as the consumer and the views call them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import override_settings
from google.cloud import firestore as gfirestore

from connections import instance
from connections.registry import get_registry, reset_registry
from presence.services import (
    get_presence,
    presence_connect,
    presence_disconnect,
    presence_get_many,
    presence_is_behind,
    presence_set,
    presence_store_check,
    reset_presence,
)
from presence.store import MemoryPresenceStore, reset_store
from scripts.procs import FirestoreEmulator
from tests.presence.conftest import Announced
from tests.support.async_poll import async_wait_until


@pytest.fixture(autouse=True)
def fresh_singletons() -> Iterator[None]:
    for reset in (reset_registry, reset_store, reset_presence):
        reset()
    yield
    for reset in (reset_registry, reset_store, reset_presence):
        reset()


def realtime(**overrides: Any) -> dict[str, Any]:
    return {**settings.REALTIME, **overrides}


EMBEDDED = realtime(REDIS_URL=None, FIRESTORE_PROJECT_ID=None, PRESENCE_GRACE_SECONDS=0.1)


@override_settings(REALTIME=EMBEDDED)
async def test_embedded_presence_in_one_process(announced: list[Announced]) -> None:
    info = await presence_connect(user_id="42", connection_id="c1", metadata={"user_agent": "t"})
    assert (info.user_id, info.metadata) == ("42", {"user_agent": "t"})
    assert isinstance(get_presence().store, MemoryPresenceStore)
    assert (await presence_get_many(user_ids=["42"]))["42"].status == "online"
    state = await presence_set(user_id="42", status="away")
    assert (state.status, state.updated_at is not None) == ("away", True)
    with pytest.raises(ValueError):
        await presence_set(user_id="42", status="gone")
    await presence_disconnect(user_id="42", connection_id="c1")

    async def offline() -> bool:
        await get_presence().process_due()
        return (await presence_get_many(user_ids=["42"]))["42"].status == "offline"

    await async_wait_until(offline, timeout=5, what="offline after the grace")
    assert [e.status for e in announced] == ["online", "away", "offline"]
    assert presence_is_behind() is False
    assert await presence_store_check(0.5) is True


@override_settings(REALTIME=EMBEDDED)
def test_services_work_from_sync_views() -> None:
    state = async_to_sync(presence_set)(user_id="5", status="busy")
    assert state.status == "busy"
    states = async_to_sync(presence_get_many)(user_ids=["5", "6"])
    assert {uid: s.status for uid, s in states.items()} == {"5": "busy", "6": "offline"}


@pytest.mark.redis
@pytest.mark.firestore
async def test_instance_loops_take_a_user_offline(
    redis_url: str, firestore: FirestoreEmulator
) -> None:
    fast = realtime(
        REDIS_URL=redis_url,
        FIRESTORE_PROJECT_ID=firestore.project_id,
        INSTANCE_ID="inst-loops",
        PRESENCE_GRACE_SECONDS=0.2,
        PRESENCE_DEADLINE_POLL_SECONDS=0.05,
        HEARTBEAT_INTERVAL_SECONDS=0.1,
        PRESENCE_STORE_TIMEOUT_SECONDS=5,
    )
    docs = gfirestore.AsyncClient(project=firestore.project_id).collection("users")
    with override_settings(REALTIME=fast):
        try:
            await instance.instance_start()
            await presence_connect(user_id="42", connection_id="c1", metadata={})
            assert (await docs.document("42").get()).get("status") == "online"
            assert await presence_store_check(5) is True
            await presence_disconnect(user_id="42", connection_id="c1")

            async def offline() -> bool:
                snap = await docs.document("42").get()
                return bool(snap.get("status") == "offline")

            await async_wait_until(offline, timeout=10, what="the deadline loop")
        finally:
            # Bounded: a client left bound to an earlier test's loop must not hang the suite.
            async with asyncio.timeout(20):
                await instance.instance_stop()
                await get_presence().close()
                await get_registry().close()
