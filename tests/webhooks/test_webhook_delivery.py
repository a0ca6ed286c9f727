"""Webhooks as a receiver sees them: signed batches, every event owed, in order, retried."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from accounts.tokens import token_issue
from chat import services
from chat.models import Conversation
from tests.support.async_poll import async_wait_until
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.webhook_receiver import WebhookReceiver
from tests.support.ws_client import frame_is
from tests.webhooks.conftest import SECRET, Clock
from webhooks.delivery import batch_claim, outbox_stats
from webhooks.models import OutboxEvent
from webhooks.sender import WebhookSender

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def add(conversation_id: str, user_id: str, by: str) -> None:
    services.participants_add(
        conversation=Conversation.objects.get(pk=conversation_id), user_ids=[user_id], by_id=by
    )


@database_sync_to_async
def remove(conversation_id: str, user_id: str, by: str) -> None:
    services.participant_remove(
        conversation=Conversation.objects.get(pk=conversation_id), user_id=user_id, by_id=by
    )


@database_sync_to_async
def send(conversation_id: str, sender: str, body: str = "hi") -> str:
    message = services.message_send(
        conversation=Conversation.objects.get(pk=conversation_id), sender_id=sender, body=body
    )
    return str(message.id)


@database_sync_to_async
def stats(clock: Clock) -> dict[str, Any]:
    return outbox_stats(now=clock())


@database_sync_to_async
def owed() -> int:
    return OutboxEvent.objects.count()


async def drain(sender: WebhookSender, receiver: WebhookReceiver, clock: Clock, ids: int) -> None:
    """Run the sender (moving its clock past any backoff) until ``ids`` events were accepted."""

    async def done() -> bool:
        await sender.run_once()
        clock.advance(600)
        return len(receiver.accepted_ids()) >= ids and await owed() == 0

    await async_wait_until(done, timeout=30, what=f"{ids} webhook events accepted")


async def test_member_events_arrive_in_one_signed_batch(webhooks_on, receiver, clock, demo):
    ab = demo.conversations["ab"]
    await add(ab, demo.carol.id, demo.alice.id)
    await remove(ab, demo.carol.id, demo.bob.id)
    sender = WebhookSender(clock=clock)
    await drain(sender, receiver, clock, 2)
    assert receiver.bad_signatures == 0
    [call] = receiver.calls
    uuid.UUID(call.batch["id"])
    datetime.fromisoformat(call.batch["time"])
    added, removed = call.batch["events"]
    assert added == {
        "name": "member.added",
        "id": added["id"],
        "conversation_id": ab,
        "user_id": demo.carol.id,
        "by": demo.alice.id,
        "seq": 1,
    }
    assert removed == {
        "name": "member.removed",
        "id": removed["id"],
        "conversation_id": ab,
        "user_id": demo.carol.id,
        "by": demo.bob.id,
        "seq": 2,
    }
    assert added["id"] != removed["id"]
    assert (await stats(clock))["delivered"] == 2


async def test_message_offline_names_the_participants_without_a_socket(
    webhooks_on, receiver, clock, demo, open_socket
):
    bob = await open_socket(demo.bob)
    await bob.recv_until(frame_is("connected"))
    abc = demo.conversations["abc"]
    message_id = await send(abc, demo.alice.id)
    await drain(WebhookSender(clock=clock), receiver, clock, 1)
    [event] = receiver.accepted_events("message.offline")
    assert event == {
        "name": "message.offline",
        "id": event["id"],
        "conversation_id": abc,
        "seq": 1,
        "message_id": message_id,
        "sender_id": demo.alice.id,
        "user_ids": [demo.carol.id],
    }


async def test_a_message_sent_from_a_socket_owes_the_same_event(
    webhooks_on, receiver, clock, demo, open_socket
):
    alice = await open_socket(demo.alice)
    await alice.recv_until(frame_is("connected"))
    abc = demo.conversations["abc"]
    ack = await alice.request({"type": "message", "conversation_id": abc, "body": "hello"})
    await drain(WebhookSender(clock=clock), receiver, clock, 2)
    [event] = receiver.accepted_events("message.offline")
    assert event["message_id"] == ack["message"]["id"]
    assert (event["seq"], event["sender_id"]) == (1, demo.alice.id)
    assert event["user_ids"] == sorted([demo.bob.id, demo.carol.id], key=int)


async def test_no_message_offline_when_every_recipient_is_connected(
    webhooks_on, receiver, clock, demo, open_socket
):
    bob = await open_socket(demo.bob)
    await bob.recv_until(frame_is("connected"))
    await send(demo.conversations["ab"], demo.alice.id)
    sender = WebhookSender(clock=clock)
    await async_wait_until(owed, what="the message's outbox row")

    async def resolved() -> bool:
        await sender.run_once()
        return await owed() == 0

    await async_wait_until(resolved, what="the event resolved to nobody")
    # Bob's connect is announced (user.online); the message owes nobody anything.
    assert [e["name"] for c in receiver.calls for e in c.batch["events"]] == ["user.online"]


async def test_nothing_is_written_to_the_outbox_without_urls(demo):
    ab = demo.conversations["ab"]
    await send(ab, demo.alice.id)
    await add(ab, demo.carol.id, demo.alice.id)
    assert await owed() == 0


async def test_a_conversation_s_events_arrive_in_seq_order_through_failures(
    webhooks_on, receiver, clock, demo
):
    webhooks_on(WEBHOOK_BATCH_SIZE=3)
    ab, abc = demo.conversations["ab"], demo.conversations["abc"]
    for i in range(8):
        await send(abc, demo.alice.id, f"m{i}")
        await send(ab, demo.bob.id, f"n{i}")
    await add(ab, demo.dave.id, demo.alice.id)
    sender = WebhookSender(clock=clock)
    for _ in range(4):  # fail a few calls on the way
        receiver.status = 500
        await sender.run_once()
        receiver.status = 200
        await sender.run_once()
        clock.advance(600)
    await drain(sender, receiver, clock, 17)
    seen: dict[str, list[int]] = {}
    for call in receiver.calls:
        if call.status != 200:
            continue
        for event in call.batch["events"]:
            seen.setdefault(event["conversation_id"], []).append(event["seq"])
    for seqs in seen.values():
        assert seqs == sorted(seqs), seqs
    assert seen[abc] == list(range(1, 9))
    assert seen[ab] == list(range(1, 10))
    failures = sum(call.status == 500 for call in receiver.calls)
    assert failures >= 1
    assert (await stats(clock))["failed_attempts"] == failures


async def test_a_receiver_that_is_down_then_up_gets_every_event(webhooks_on, receiver, clock, demo):
    receiver.stop()
    abc = demo.conversations["abc"]
    for i in range(5):
        await send(abc, demo.alice.id, f"m{i}")
    sender = WebhookSender(clock=clock)
    for _ in range(3):
        await sender.run_once()
        clock.advance(600)
    down = await stats(clock)
    assert down["pending"] == 5 and down["failed_attempts"] >= 1
    receiver.start()
    await drain(sender, receiver, clock, 5)
    events = receiver.accepted_events("message.offline")
    assert sorted(e["seq"] for e in events) == [1, 2, 3, 4, 5]
    after = await stats(clock)
    assert (after["pending"], after["delivered"], after["expired"]) == (0, 5, 0)


async def test_a_receiver_answering_500_is_retried_until_it_takes_them(
    webhooks_on, receiver, clock, demo
):
    receiver.status = 500
    await add(demo.conversations["ab"], demo.carol.id, demo.alice.id)
    sender = WebhookSender(clock=clock)
    await sender.run_once()
    # Not before its backoff (base 1 s: at most 2 s for the second attempt).
    await sender.run_once()
    assert len(receiver.calls) == 1
    receiver.status = 204
    await drain(sender, receiver, clock, 1)
    first, last = receiver.calls[0].batch, receiver.calls[-1].batch
    assert first["id"] == last["id"] and first["events"] == last["events"]
    assert (await stats(clock))["failed_attempts"] == 1


async def test_an_event_past_its_maximum_age_is_expired_not_retried(
    webhooks_on, receiver, clock, demo
):
    webhooks_on(WEBHOOK_MAX_AGE_SECONDS=100)
    receiver.status = 500
    await add(demo.conversations["ab"], demo.carol.id, demo.alice.id)
    sender = WebhookSender(clock=clock)
    await sender.run_once()
    clock.advance(50)
    await sender.run_once()
    assert (await stats(clock))["pending"] == 1
    clock.advance(60)
    await sender.run_once()
    counted = await stats(clock)
    assert (counted["pending"], counted["expired"], counted["delivered"]) == (0, 1, 0)
    calls = len(receiver.calls)
    clock.advance(1000)
    await sender.run_once()
    assert len(receiver.calls) == calls == 3


async def test_a_batch_leased_by_a_dead_sender_is_sent_after_its_lease(
    webhooks_on, receiver, clock, demo
):
    await add(demo.conversations["ab"], demo.carol.id, demo.alice.id)
    # A sender that claimed the batch and died before answering.
    claimed = await database_sync_to_async(batch_claim)(
        target=receiver.url, now=clock(), size=10, lease_seconds=5
    )
    assert claimed is not None
    sender = WebhookSender(clock=clock)
    await sender.run_once()
    assert receiver.calls == []
    clock.advance(6)
    await sender.run_once()
    [call] = receiver.calls
    assert call.batch["id"] == str(claimed.batch_id)


def test_stats_are_for_staff_only(webhooks_on, db):
    client = APIClient()
    assert client.get("/api/webhooks/stats").status_code == 401
    users = get_user_model().objects
    someone = users.create_user(username="someone", password=None)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_issue(user=someone).key}")
    assert client.get("/api/webhooks/stats").status_code == 403
    staff = users.create_user(username="ops", password=None, is_staff=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_issue(user=staff).key}")
    response = client.get("/api/webhooks/stats")
    assert response.status_code == 200
    assert response.json() == {
        "pending": 0,
        "oldest_pending_age_seconds": 0.0,
        "delivered": 0,
        "failed_attempts": 0,
        "expired": 0,
    }


def test_urls_without_a_secret_refuse_to_start():
    env = {
        **os.environ,
        "WEBHOOK_URLS": "http://127.0.0.1:9/hook",
        "DJANGO_SETTINGS_MODULE": "realtime_project.settings",
    }
    env.pop("WEBHOOK_SECRET", None)
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "WEBHOOK_SECRET is required" in started.stderr
    with_secret = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            **env,
            "WEBHOOK_SECRET": SECRET,
            "DJANGO_SETTINGS_MODULE": "realtime_project.settings",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert with_secret.returncode == 0, with_secret.stderr
