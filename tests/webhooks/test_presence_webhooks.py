"""user.online / user.offline: sent when the stored presence changes, never for a reconnect."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async

from presence.store import MemoryPresenceStore, PresenceWrite
from presence.webhooks import HELD_SETTLE_AFTER_SECONDS, TransitionHold, held_settle
from tests.support.async_poll import async_wait_until
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.ws_client import frame_is
from webhooks.models import OutboxEvent
from webhooks.sender import WebhookSender

pytestmark = pytest.mark.django_db(transaction=True)


async def names_for(receiver, user_id: str) -> list[str]:
    return [e["name"] for e in receiver.accepted_events() if e.get("user_id") == user_id]


async def test_online_on_the_first_socket_offline_after_the_grace_only(
    webhooks_on, receiver, clock, demo, open_socket, realtime_override
):
    realtime_override(PRESENCE_GRACE_SECONDS=0.5, PRESENCE_DEADLINE_POLL_SECONDS=0.05)
    sender = WebhookSender()
    first = await open_socket(demo.dave)
    await first.recv_until(frame_is("connected"))
    second = await open_socket(demo.dave)
    await second.recv_until(frame_is("connected"))
    # A reconnect inside the grace period: no offline, and no second online.
    await first.disconnect()
    await second.disconnect()
    third = await open_socket(demo.dave)
    await third.recv_until(frame_is("connected"))

    async def online_sent() -> bool:
        await sender.run_once()
        return await names_for(receiver, demo.dave.id) == ["user.online"]

    await async_wait_until(online_sent, what="dave's user.online")
    await third.disconnect()

    async def offline_sent() -> bool:
        await sender.run_once()
        return await names_for(receiver, demo.dave.id) == ["user.online", "user.offline"]

    await async_wait_until(offline_sent, what="dave's user.offline after the grace")
    online, offline = (e for e in receiver.accepted_events() if e.get("user_id") == demo.dave.id)
    assert set(online) == set(offline) == {"name", "id", "user_id", "at"}
    assert datetime.fromisoformat(online["at"]) < datetime.fromisoformat(offline["at"])


def change(user_id: str, status: str, at: datetime) -> PresenceWrite:
    return PresenceWrite(
        user_id=user_id,
        status=status,
        last_seen=at,
        updated_at=at,
        version=int(at.timestamp() * 1_000_000),
        only_if_offline=status != "offline",
    )


@database_sync_to_async
def held_ids() -> set[uuid.UUID]:
    return set(OutboxEvent.objects.filter(held=True).values_list("event_id", flat=True))


@database_sync_to_async
def released_ids() -> set[uuid.UUID]:
    return set(OutboxEvent.objects.filter(held=False).values_list("event_id", flat=True))


async def test_a_writer_that_died_between_outbox_and_store_is_settled_from_the_store(
    webhooks_on, demo
):
    store = MemoryPresenceStore()
    at = datetime.now(UTC)
    landed, lost = change("1", "online", at), change("2", "online", at)
    for write in (landed, lost):
        hold = TransitionHold(write, "user.online")
        await hold.take()
    # The first reached the store before its writer died; the second never did.
    assert await store.write(landed) is not None
    # Not before the writer had its chance to settle them itself.
    assert await held_settle(store=store, now=at) == 0
    later = at + timedelta(seconds=HELD_SETTLE_AFTER_SECONDS + 5)
    assert await held_settle(store=store, now=later) == 2
    assert await held_ids() == set()
    assert await released_ids() == {TransitionHold(landed, "user.online").event_id}


async def test_a_retried_presence_write_holds_one_event(webhooks_on, demo):
    write = change("3", "offline", datetime.now(UTC))
    await TransitionHold(write, "user.offline").take()
    await TransitionHold(write, "user.offline").take()
    assert len(await held_ids()) == 1
    assert await database_sync_to_async(OutboxEvent.objects.count)() == 1
