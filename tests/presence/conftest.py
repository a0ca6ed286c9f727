"""Two presence instances in one process, sharing a real Redis and the real Firestore emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from google.cloud import firestore as gfirestore

from connections.registry_redis import RedisConnectionRegistry
from presence.services import PresenceService
from presence.signals import presence_changed
from presence.store import FirestorePresenceStore
from presence.timers import RedisDeadlineQueue
from scripts.procs import FirestoreEmulator

GRACE_SECONDS = 0.3


@dataclass
class Cluster:
    a: PresenceService
    b: PresenceService
    docs: Any  # the emulator's collection, read directly

    async def document(self, user_id: str) -> Any:
        return await self.docs.document(user_id).get()


def build_service(*, redis_url: str, project_id: str, instance_id: str) -> PresenceService:
    return PresenceService(
        registry=RedisConnectionRegistry(
            redis_url=redis_url, instance_id=instance_id, ttl_seconds=1
        ),
        store=FirestorePresenceStore(project_id=project_id, collection="users", timeout_seconds=1),
        deadlines=RedisDeadlineQueue(redis_url=redis_url),
        grace_seconds=GRACE_SECONDS,
    )


@pytest.fixture
async def cluster(redis_url: str, firestore: FirestoreEmulator) -> AsyncIterator[Cluster]:
    a = build_service(redis_url=redis_url, project_id=firestore.project_id, instance_id="inst-a")
    b = build_service(redis_url=redis_url, project_id=firestore.project_id, instance_id="inst-b")
    await a.registry.heartbeat()
    await b.registry.heartbeat()
    client = gfirestore.AsyncClient(project=firestore.project_id)
    # A freshly started emulator takes seconds to answer its first call; not what is tested.
    await client.collection("users").document("_warm").get(timeout=30)
    yield Cluster(a=a, b=b, docs=client.collection("users"))
    for service in (a, b):
        await service.close()
        await service.registry.close()


@dataclass
class Announced:
    user_id: str
    status: str
    last_seen: datetime | None
    updated_at: datetime


@pytest.fixture
def announced() -> Iterator[list[Announced]]:
    """Every presence_changed sent during the test."""
    heard: list[Announced] = []

    async def receiver(sender: Any, **kwargs: Any) -> None:
        heard.append(
            Announced(
                kwargs["user_id"], kwargs["status"], kwargs["last_seen"], kwargs["updated_at"]
            )
        )

    presence_changed.connect(receiver, weak=False, dispatch_uid="tests.presence.announced")
    yield heard
    presence_changed.disconnect(dispatch_uid="tests.presence.announced")
