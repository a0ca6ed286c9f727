"""What operators see of delivery (docs/health.md, "Delivery and healing metrics"): the
latency of every frame handed to a socket, by kind, and healing's backlog, read through the
registry ``/metrics`` renders."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from django.db import transaction

from chat import services
from chat.healing import heal_once
from chat.models import Conversation, Event
from health import metrics
from tests.support.async_poll import async_wait_until
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.ws_client import frame_is

pytestmark = pytest.mark.django_db(transaction=True)

LATENCY = "realtime_delivery_latency_seconds"


def sample(name: str, **labels: str) -> float:
    return float(metrics.registry.get_sample_value(name, labels) or 0.0)


def latency_count(kind: str) -> float:
    return sample(f"{LATENCY}_count", kind=kind)


async def counted(kind: str, expected: float) -> float:
    """The latency count of ``kind`` once it reaches ``expected`` (the observation follows the
    frame's hand-over), checked not to overshoot it."""
    await async_wait_until(lambda: latency_count(kind) >= expected, what=f"{kind} observed")
    assert latency_count(kind) == expected
    return expected


async def connected(open_socket, user):
    socket = await open_socket(user)
    await socket.recv_until(frame_is("connected"))
    return socket


@database_sync_to_async
def send(conversation_id, user, body, *, emit=True):
    """A message by REST's path; ``emit=False`` loses its live delivery (a failed publish)."""
    conversation = Conversation.objects.get(pk=conversation_id)
    with transaction.atomic():
        message = services.message_send(
            conversation=conversation, sender_id=user.id, body=body, client_id=None
        )
        if not emit:
            transaction.get_connection().run_on_commit = []
    return message


@database_sync_to_async
def backdate(conversation_id: str, seq: int, *, seconds: float) -> None:
    """Make a logged event look ``seconds`` old, as if its live delivery was lost that long."""
    event = Event.objects.get(conversation_id=conversation_id, seq=seq)
    frame = event.frame if isinstance(event.frame, dict) else json.loads(event.frame)
    frame["ts"] = (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()
    Event.objects.filter(pk=event.pk).update(frame=frame)


async def test_each_live_frame_is_timed_once_by_kind(open_socket, demo) -> None:
    ab = demo.conversations["ab"]
    bob = await connected(open_socket, demo.bob)
    alice = await connected(open_socket, demo.alice)
    messages, typing = latency_count("message"), latency_count("typing")
    quick = sample(f"{LATENCY}_bucket", kind="message", le="2.5")
    await send(ab, demo.alice, "hello")  # both of them get it
    await bob.recv_until(frame_is("message", seq=1))
    await alice.recv_until(frame_is("message", seq=1))
    await counted("message", messages + 2)
    await alice.request({"type": "typing", "conversation_id": ab, "is_typing": True})
    await bob.recv_until(frame_is("typing"))
    await counted("typing", typing + 1)  # not alice's own: she got an ack
    # Handed over in-process at once: seconds would mean the clock or the path is wrong.
    assert sample(f"{LATENCY}_bucket", kind="message", le="2.5") == quick + 2
    # Every kind is exported from the start, so a dashboard has its series before traffic.
    for kind in ("message", "read", "member", "typing", "presence"):
        assert metrics.registry.get_sample_value(f"{LATENCY}_count", {"kind": kind}) is not None


async def test_a_healed_event_counts_from_when_it_was_logged(open_socket, demo) -> None:
    ab = demo.conversations["ab"]
    bob = await connected(open_socket, demo.bob)
    await send(ab, demo.alice, "lost", emit=False)
    await backdate(ab, 1, seconds=30)
    total = latency_count("message")
    within_10s = sample(f"{LATENCY}_bucket", kind="message", le="10.0")
    assert await heal_once(fully=True) == 1
    await bob.recv_until(frame_is("message", seq=1))
    await counted("message", total + 1)
    # 30 s late: past the top bucket, so p99 shows what the client waited.
    assert sample(f"{LATENCY}_bucket", kind="message", le="10.0") == within_10s


async def test_a_resume_replay_is_not_timed(open_socket, demo) -> None:
    ab = demo.conversations["ab"]
    await send(ab, demo.alice, "while away")
    bob = await connected(open_socket, demo.bob)
    total = latency_count("message")
    ack = await bob.request({"type": "resume", "positions": {ab: 0}})
    assert ack["conversations"][ab] == {"recovered": True, "seq": 1}
    assert [f["seq"] for f in bob.frames if f.get("type") == "message"] == [1]
    await send(ab, demo.alice, "live")  # a barrier: timed, unlike the replay before it
    await bob.recv_until(frame_is("message", seq=2))
    await counted("message", total + 1)


async def test_the_heal_backlog_shows_what_healing_owes_until_delivered(open_socket, demo) -> None:
    ab, abc = demo.conversations["ab"], demo.conversations["abc"]
    bob = await connected(open_socket, demo.bob)
    carol = await connected(open_socket, demo.carol)
    handed = sample("realtime_heal_events_handed_total")
    await send(ab, demo.alice, "lost 1", emit=False)
    await send(ab, demo.alice, "lost 2", emit=False)
    await send(abc, demo.alice, "lost 3", emit=False)
    assert sample("realtime_heal_backlog") == 0
    assert await heal_once(fully=True) == 4  # bob: 2 + 1, carol: 1
    assert sample("realtime_heal_backlog") == 4
    assert sample("realtime_heal_events_handed_total") == handed + 4
    await bob.recv_until(frame_is("message", seq=2))
    await bob.recv_until(frame_is("message", conversation_id=abc, seq=1))
    await carol.recv_until(frame_is("message", seq=1))
    # Delivered: the next pass owes nothing.
    assert await heal_once(fully=True) == 0
    assert sample("realtime_heal_backlog") == 0
    assert sample("realtime_heal_events_handed_total") == handed + 4
