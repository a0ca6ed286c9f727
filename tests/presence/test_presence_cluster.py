"""Presence across two instances: grace, races, ordering, outages, reconciliation."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from presence.reconcile import presence_reconcile
from presence.services import PresenceService
from presence.store import PresenceWrite
from scripts.procs import FirestoreEmulator, port_open
from tests.presence.conftest import GRACE_SECONDS, Announced, Cluster
from tests.support.async_poll import async_wait_until

pytestmark = [pytest.mark.redis, pytest.mark.firestore]


async def offline_written(*services: PresenceService) -> int:
    """Run every instance's deadline pass once; how many offline writes happened."""
    results = await asyncio.gather(*(s.process_due() for s in services))
    return sum(results)


async def run_deadlines_until(cluster: Cluster, user_id: str, status: str) -> None:
    async def reached() -> bool:
        await offline_written(cluster.a, cluster.b)
        snap = await cluster.document(user_id)
        return bool(snap.exists and snap.get("status") == status)

    await async_wait_until(reached, timeout=10, what=f"user {user_id} to be {status}")


async def test_first_socket_online_last_socket_offline_after_grace(
    cluster: Cluster, announced: list[Announced]
) -> None:
    await cluster.a.connect(user_id="42", connection_id="c1", metadata={})
    await cluster.b.connect(user_id="42", connection_id="c2", metadata={})
    snap = await cluster.document("42")
    assert snap.get("status") == "online"
    assert [(e.user_id, e.status) for e in announced] == [("42", "online")]  # one write only

    await cluster.a.disconnect(user_id="42", connection_id="c1")
    assert await cluster.a.deadlines.pending("42") is None  # still connected on b
    closed_at = time.time()
    await cluster.b.disconnect(user_id="42", connection_id="c2")
    assert await cluster.a.deadlines.pending("42") is not None

    await run_deadlines_until(cluster, "42", "offline")
    snap = await cluster.document("42")
    assert abs(snap.get("last_seen").timestamp() - closed_at) < 1
    assert snap.get("updated_at").timestamp() >= closed_at + GRACE_SECONDS - 0.05
    assert [(e.user_id, e.status) for e in announced] == [("42", "online"), ("42", "offline")]
    states = await cluster.a.get_many(user_ids=["42", "nobody"])
    assert states["42"].status == "offline"
    assert (states["nobody"].status, states["nobody"].last_seen) == ("offline", None)


async def test_reconnect_within_grace_writes_nothing(
    cluster: Cluster, announced: list[Announced]
) -> None:
    await cluster.a.connect(user_id="42", connection_id="c1", metadata={})
    before = (await cluster.document("42")).update_time
    await cluster.a.disconnect(user_id="42", connection_id="c1")
    # Back on the other instance before the deadline.
    await cluster.b.connect(user_id="42", connection_id="c2", metadata={})
    assert await cluster.a.deadlines.pending("42") is None

    past_deadline = time.time() + GRACE_SECONDS
    await async_wait_until(lambda: time.time() > past_deadline, what="the old deadline")
    assert await offline_written(cluster.a, cluster.b) == 0
    snap = await cluster.document("42")
    assert snap.update_time == before
    assert snap.get("status") == "online"
    assert [e.status for e in announced] == ["online"]


async def test_reconnect_keeps_an_explicit_status_without_writing(cluster: Cluster) -> None:
    await cluster.a.connect(user_id="42", connection_id="c1", metadata={})
    await cluster.a.set_status(user_id="42", status="busy")
    before = (await cluster.document("42")).update_time
    await cluster.a.connect(user_id="42", connection_id="c2", metadata={})
    snap = await cluster.document("42")
    assert (snap.get("status"), snap.update_time) == ("busy", before)
    with pytest.raises(ValueError):
        await cluster.a.set_status(user_id="42", status="sleeping")


async def test_a_due_deadline_is_claimed_exactly_once(cluster: Cluster) -> None:
    users = [str(n) for n in range(20)]
    now = time.time()
    for uid in users:
        await cluster.a.deadlines.schedule(uid, now)
    claims = await asyncio.gather(
        cluster.a.deadlines.claim_due(now + 1, limit=7),
        cluster.b.deadlines.claim_due(now + 1, limit=7),
        cluster.a.deadlines.claim_due(now + 1, limit=7),
        cluster.b.deadlines.claim_due(now + 1, limit=7),
    )
    claimed = [uid for batch in claims for uid, _ in batch]
    assert sorted(claimed, key=int) == users


async def test_racing_instances_write_offline_once(
    cluster: Cluster, announced: list[Announced]
) -> None:
    for n in range(5):
        await cluster.a.connect(user_id=f"u{n}", connection_id=f"c{n}", metadata={})
        await cluster.a.disconnect(user_id=f"u{n}", connection_id=f"c{n}")
    past_deadline = time.time() + GRACE_SECONDS
    await async_wait_until(lambda: time.time() > past_deadline, what="the deadlines")
    assert await offline_written(cluster.a, cluster.b) == 5
    assert sorted(e.user_id for e in announced if e.status == "offline") == [
        f"u{n}" for n in range(5)
    ]


async def test_a_late_older_write_never_overwrites_a_newer_state(cluster: Cluster) -> None:
    now = datetime.now(tz=UTC)
    older = PresenceWrite("42", "offline", now, now, version=1_000)
    newer = PresenceWrite("42", "busy", now, now, version=2_000)
    assert await cluster.b.store.write(newer) is not None
    # The older transition from instance a arrives late.
    assert await cluster.a.store.write(older) is None
    snap = await cluster.document("42")
    assert (snap.get("status"), snap.get("version")) == ("busy", 2_000)


async def test_concurrent_writers_converge_on_the_newest(cluster: Cluster) -> None:
    now = datetime.now(tz=UTC)
    writes = [
        PresenceWrite("42", status, now, now, version=version)
        for version, status in [(1, "online"), (5, "away"), (3, "busy"), (4, "offline")]
    ]
    stores = [cluster.a.store, cluster.b.store]
    await asyncio.gather(*(stores[i % 2].write(w) for i, w in enumerate(writes)))
    snap = await cluster.document("42")
    assert (snap.get("status"), snap.get("version")) == ("away", 5)


async def test_store_outage_is_retried_until_the_transition_lands(
    cluster: Cluster, firestore: FirestoreEmulator, announced: list[Announced]
) -> None:
    firestore.stop()
    # The launcher exits before the emulator's JVM lets go of the port.
    await async_wait_until(lambda: not port_open(firestore.port), timeout=10, what="the port")
    try:
        state = await cluster.a.set_status(user_id="42", status="away")
        assert state.status == "away"
        assert cluster.a.is_behind() and cluster.a.pending_count() == 1
        # While behind, callers are not made to wait on the dead store.
        started = time.monotonic()
        await cluster.a.connect(user_id="7", connection_id="c7", metadata={})
        assert time.monotonic() - started < 0.5
        assert cluster.a.pending_count() == 2
        assert announced == []
        assert await cluster.a.retry_pending() == 0
        assert (await cluster.a.get_many(user_ids=["42"]))["42"].status == "away"
    finally:
        firestore.start()

    async def caught_up() -> bool:
        await cluster.a.retry_pending()
        return not cluster.a.is_behind()

    await async_wait_until(caught_up, timeout=20, what="the held transitions to land")
    assert cluster.a.writer.retries >= 1  # reported as realtime_presence_retries
    assert (await cluster.document("42")).get("status") == "away"
    assert (await cluster.document("7")).get("status") == "online"
    assert sorted((e.user_id, e.status) for e in announced) == [("42", "away"), ("7", "online")]


async def test_reconciliation_restores_deadlines_lost_with_redis(
    cluster: Cluster, redis_url: str
) -> None:
    await cluster.a.connect(user_id="42", connection_id="c1", metadata={})
    await cluster.b.connect(user_id="7", connection_id="c2", metadata={})
    await cluster.a.disconnect(user_id="42", connection_id="c1")
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.flushall()  # the deadline of 42 is gone
    finally:
        await client.aclose()
    await cluster.a.registry.heartbeat()
    await cluster.b.registry.heartbeat()  # b registers user 7's socket again

    assert await presence_reconcile(service=cluster.a) == ["42"]
    assert await presence_reconcile(service=cluster.b) == []  # already pending: not twice
    await run_deadlines_until(cluster, "42", "offline")
    assert (await cluster.document("7")).get("status") == "online"


async def test_users_of_a_reaped_instance_go_offline(cluster: Cluster) -> None:
    await cluster.b.connect(user_id="42", connection_id="c1", metadata={})
    await cluster.b.registry.close()  # b dies: no more heartbeats

    async def reaped() -> list[str]:
        await cluster.a.registry.heartbeat()
        return await cluster.a.registry.reap_dead_instances()

    users = await async_wait_until(reaped, timeout=10, what="b's lease to lapse")
    assert users == ["42"]
    await cluster.a.users_lost(users)
    await run_deadlines_until(cluster, "42", "offline")
