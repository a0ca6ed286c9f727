"""The real services the suite depends on start and answer."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis
from google.cloud import firestore as gfirestore

from scripts.procs import FirestoreEmulator


@pytest.mark.redis
async def test_real_redis_answers_ping(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.ping() is True
        await client.set("smoke", "1")
        assert await client.get("smoke") == b"1"
    finally:
        await client.aclose()


@pytest.mark.firestore
async def test_firestore_emulator_round_trip(firestore: FirestoreEmulator) -> None:
    client = gfirestore.AsyncClient(project=firestore.project_id)
    doc_id = uuid.uuid4().hex
    ref = client.collection("smoke").document(doc_id)
    await ref.set({"status": "online"})
    snapshot = await ref.get()
    assert snapshot.exists
    assert snapshot.to_dict() == {"status": "online"}
