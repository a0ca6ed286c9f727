"""Delivery on one instance: seq order, resume, gaps filled from the log, healing, client_id,
slow consumers (docs/delivery.md). Every event a socket receives is checked against its schema.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction

from chat import events, services
from chat.event_types import PresenceEvent, event_check, event_frame
from chat.healing import heal_once
from chat.layer_messages import realtime_event_message
from chat.models import Conversation, Event
from connections import control
from realtime_project.close_codes import WS_4008_SLOW_CONSUMER
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.ws_client import frame_is

pytestmark = pytest.mark.django_db(transaction=True)


async def connected(open_socket, user):
    socket = await open_socket(user)
    await socket.recv_until(frame_is("connected"))
    return socket


def durable(socket, conversation_id):
    """The seqs of the durable events a socket received for one conversation, in order."""
    frames = [
        f
        for f in socket.frames
        if f.get("type") in ("message", "read", "member")
        and f.get("conversation_id") == conversation_id
    ]
    for frame in frames:
        event_check(frame)
    return [f["seq"] for f in frames]


@database_sync_to_async
def send(conversation_id, user, body, *, emit=True, client_id=None):
    """A message by REST's path; ``emit=False`` writes it without any live delivery (a lost
    publish, as in a Redis outage)."""
    conversation = Conversation.objects.get(pk=conversation_id)
    with transaction.atomic():
        message = services.message_send(
            conversation=conversation, sender_id=user.id, body=body, client_id=client_id
        )
        if not emit:
            transaction.get_connection().run_on_commit = []
    return message


async def test_durable_events_carry_gapless_seqs_in_order(open_socket, demo) -> None:
    ab = demo.conversations["ab"]
    bob = await connected(open_socket, demo.bob)
    alice = await connected(open_socket, demo.alice)
    for i in range(3):
        await send(ab, demo.alice, f"m{i}")
    ack = await alice.request({"type": "message", "conversation_id": ab, "body": "by frame"})
    assert ack["message"]["seq"] == 4
    read = await bob.request(
        {"type": "read", "conversation_id": ab, "message_ids": [ack["message"]["id"]]}
    )
    assert read["read_at"]
    await alice.recv_until(frame_is("read", seq=5))
    await bob.recv_until(frame_is("message", seq=4))
    assert durable(bob, ab) == [1, 2, 3, 4]  # his own read came back as the ack only
    assert durable(alice, ab) == [1, 2, 3, 5]  # her own message likewise


async def test_a_gap_is_filled_from_the_log_before_the_next_event(open_socket, demo) -> None:
    ab = demo.conversations["ab"]
    bob = await connected(open_socket, demo.bob)
    await send(ab, demo.alice, "lost 1", emit=False)
    await send(ab, demo.alice, "lost 2", emit=False)
    await send(ab, demo.alice, "live")
    await bob.recv_until(frame_is("message", seq=3))
    assert durable(bob, ab) == [1, 2, 3]
    assert [f["message"]["body"] for f in bob.frames if f.get("type") == "message"] == [
        "lost 1",
        "lost 2",
        "live",
    ]


async def test_a_replayed_or_repeated_event_is_delivered_once(open_socket, demo) -> None:
    ab = demo.conversations["ab"]
    bob = await connected(open_socket, demo.bob)
    await send(ab, demo.alice, "once")
    first = await bob.recv_until(frame_is("message", seq=1))
    # The same logged frame again, under another dedup key (as healing and live can race).
    frame = await database_sync_to_async(lambda: Event.objects.get(seq=1).frame)()
    again = {**realtime_event_message(frame), "dedup_key": "another"}
    await get_channel_layer().group_send(events.conversation_group(ab), again)
    await send(ab, demo.alice, "barrier")
    await bob.recv_until(frame_is("message", seq=2))
    assert durable(bob, ab) == [1, 2]
    assert first["event_id"] == frame["event_id"]


async def test_healing_delivers_what_live_delivery_lost_without_a_later_event(
    open_socket, demo
) -> None:
    ab = demo.conversations["ab"]
    bob = await connected(open_socket, demo.bob)
    await send(ab, demo.alice, "lost", emit=False)
    assert await heal_once(fully=True) == 1
    await bob.recv_until(frame_is("message", seq=1))
    assert durable(bob, ab) == [1]
    # A second pass finds nobody behind.
    assert await heal_once(fully=True) == 0


async def test_periodic_healing_waits_one_pass_for_events_still_in_flight(
    open_socket, demo
) -> None:
    ab = demo.conversations["ab"]
    await connected(open_socket, demo.bob)
    await heal_once(fully=False)
    await send(ab, demo.alice, "lost", emit=False)
    assert await heal_once(fully=False) == 0  # committed just now: maybe still on its way
    assert await heal_once(fully=False) == 1  # a pass later it is owed


async def test_healing_does_not_send_a_socket_its_own_event(open_socket, demo) -> None:
    ab = demo.conversations["ab"]
    alice = await connected(open_socket, demo.alice)
    await alice.request({"type": "message", "conversation_id": ab, "body": "mine"})
    await send(ab, demo.bob, "theirs", emit=False)
    await heal_once(fully=True)
    await alice.recv_until(frame_is("message", seq=2))
    assert durable(alice, ab) == [2]


async def test_resume_replays_what_the_client_missed_then_acks(open_socket, demo) -> None:
    ab, abc = demo.conversations["ab"], demo.conversations["abc"]
    for i in range(3):
        await send(ab, demo.alice, f"ab{i}")
    await send(abc, demo.alice, "abc0")
    bob = await connected(open_socket, demo.bob)
    await send(ab, demo.alice, "live before resume")
    await bob.recv_until(frame_is("message", seq=4))
    ack = await bob.request({"type": "resume", "positions": {ab: 1, abc: 0}})
    assert ack["type"] == "ack"
    assert ack["conversations"] == {
        ab: {"recovered": True, "seq": 4},
        abc: {"recovered": True, "seq": 1},
    }
    # 4 came live before the resume and is not replayed; 2 and 3 are.
    assert durable(bob, ab) == [4, 2, 3]
    assert durable(bob, abc) == [1]
    await send(ab, demo.alice, "after")
    await bob.recv_until(frame_is("message", seq=5))
    assert sorted(durable(bob, ab)) == [2, 3, 4, 5]


async def test_resume_too_far_behind_or_not_a_participant_recovers_nothing(
    open_socket, demo, realtime_override
) -> None:
    realtime_override(RESUME_MAX_EVENTS=2)
    ab, abc = demo.conversations["ab"], demo.conversations["abc"]
    for i in range(3):
        await send(ab, demo.alice, f"m{i}")
    await send(abc, demo.alice, "x")
    carol = await connected(open_socket, demo.carol)
    bob = await connected(open_socket, demo.bob)
    ack = await bob.request({"type": "resume", "positions": {ab: 0, abc: 0}})
    assert ack["conversations"][ab] == {"recovered": False, "seq": 3}
    assert ack["conversations"][abc] == {"recovered": True, "seq": 1}
    assert durable(bob, ab) == []
    ack = await carol.request({"type": "resume", "positions": {ab: 0, "not-an-id": 0}})
    assert ack["conversations"] == {
        ab: {"recovered": False, "seq": None},
        "not-an-id": {"recovered": False, "seq": None},
    }
    assert durable(carol, ab) == []


async def test_resume_ahead_of_the_socket_suppresses_what_the_client_has(open_socket, demo) -> None:
    ab = demo.conversations["ab"]
    bob = await connected(open_socket, demo.bob)
    # The client's old socket already had seq 1 (committed after this one started).
    await send(ab, demo.alice, "m1", emit=False)
    ack = await bob.request({"type": "resume", "positions": {ab: 1}})
    assert ack["conversations"][ab] == {"recovered": True, "seq": 1}
    await heal_once(fully=True)
    await send(ab, demo.alice, "m2")
    await bob.recv_until(frame_is("message", seq=2))
    assert durable(bob, ab) == [2]


@pytest.mark.parametrize(
    "positions",
    [[], {"x": -1}, {"x": "1"}, "abc"],
)
async def test_a_bad_resume_frame_is_invalid_payload(open_socket, demo, positions) -> None:
    bob = await connected(open_socket, demo.bob)
    reply = await bob.request({"type": "resume", "positions": positions})
    assert reply["type"] == "error"
    assert reply["code"] == "invalid_payload"


async def test_a_resent_message_frame_with_its_client_id_creates_nothing(open_socket, demo) -> None:
    ab = demo.conversations["ab"]
    alice = await connected(open_socket, demo.alice)
    bob = await connected(open_socket, demo.bob)
    frame = {"type": "message", "conversation_id": ab, "body": "once", "client_id": "c-1"}
    first = await alice.request(frame)
    second = await alice.request(frame)
    assert first["message"] == second["message"]
    assert first["message"]["client_id"] == "c-1"
    await send(ab, demo.alice, "barrier")
    await bob.recv_until(frame_is("message", seq=2))
    assert durable(bob, ab) == [1, 2]
    count = await database_sync_to_async(lambda: Event.objects.filter(type="message").count())()
    assert count == 2


@pytest.mark.parametrize("async_connections", [None, 0])
async def test_a_client_id_reused_in_another_conversation_is_refused(
    open_socket, demo, realtime_override, async_connections
) -> None:
    if async_connections is not None:
        # PostgreSQL: the one-statement write on the database threads, not the event loop's.
        realtime_override(DATABASE_ASYNC_CONNECTIONS=async_connections)
    ab, abc = demo.conversations["ab"], demo.conversations["abc"]
    alice = await connected(open_socket, demo.alice)
    carol = await connected(open_socket, demo.carol)
    first = await alice.request(
        {"type": "message", "conversation_id": ab, "body": "for bob only", "client_id": "k"}
    )
    reply = await alice.request(
        {"type": "message", "conversation_id": abc, "body": "for all", "client_id": "k"}
    )
    assert reply["type"] == "error"
    assert reply["code"] == "invalid_payload"
    assert "client_id" in reply["message"]
    assert "for bob only" not in str(reply)
    # Nothing reached carol's conversation; a retry of the first send still gets its ack.
    await send(abc, demo.alice, "barrier")
    await carol.recv_until(frame_is("message", seq=1))
    assert durable(carol, abc) == [1]
    assert [f["message"]["body"] for f in carol.frames if frame_is("message")(f)] == ["barrier"]
    retry = await alice.request(
        {"type": "message", "conversation_id": ab, "body": "for bob only", "client_id": "k"}
    )
    assert retry["message"] == first["message"]


async def test_an_overflowing_socket_is_closed_4008_and_others_keep_going(
    open_socket, demo, settings
) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime_layer.RealtimeChannelLayer",
            "CONFIG": {"capacity": 5},
        }
    }
    ab = demo.conversations["ab"]
    slow = await connected(open_socket, demo.bob)
    alice = await connected(open_socket, demo.alice)
    layer = get_channel_layer()
    # Queue far more than the capacity before the slow socket's consumer can run (a local
    # group_send does not yield to it).
    for i in range(20):
        frame = event_frame(PresenceEvent(user_id=str(i), status="away", last_seen=None))
        await layer.group_send(control.user_group(demo.bob.id), realtime_event_message(frame))
    assert await slow.wait_closed() == WS_4008_SLOW_CONSUMER
    reply = await alice.request({"type": "message", "conversation_id": ab, "body": "still here"})
    assert reply["type"] == "ack"


def test_a_resume_reads_every_conversation_in_one_query(demo, django_assert_num_queries) -> None:
    from chat import selectors

    conversations = [demo.conversations["ab"], demo.conversations["abc"]]
    for conversation_id in conversations:
        conversation = Conversation.objects.get(pk=conversation_id)
        for i in range(3):
            services.message_send(conversation=conversation, sender_id=demo.alice.id, body=str(i))
    with django_assert_num_queries(1):
        logged = selectors.events_after(
            positions={conversations[0]: 1, conversations[1]: 0}, limit_per_conversation=10
        )
    assert [e.seq for e in logged[conversations[0]]] == [2, 3]
    assert [e.seq for e in logged[conversations[1]]] == [1, 2, 3]
