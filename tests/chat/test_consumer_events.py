"""Events reaching sockets in-process: audience, origin exclusion, dedup, live join, typing."""

from __future__ import annotations

import time

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from chat import events, services
from chat.event_types import PresenceEvent, event_frame
from chat.layer_messages import realtime_event_message
from chat.models import Conversation
from connections import control
from connections.layer_messages import connection_close_message
from connections.sockets import local_sockets, sockets_close_all
from realtime_project.close_codes import WS_1012_SERVICE_RESTART
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.ws_client import frame_is

pytestmark = pytest.mark.django_db(transaction=True)


async def connected(open_socket, user):
    socket = await open_socket(user)
    await socket.recv_until(frame_is("connected"))
    return socket


async def test_event_goes_to_others_not_to_the_socket_that_caused_it(open_socket, demo) -> None:
    ab = demo.conversations["ab"]
    alice_1 = await connected(open_socket, demo.alice)
    alice_2 = await connected(open_socket, demo.alice)
    bob = await connected(open_socket, demo.bob)
    carol = await connected(open_socket, demo.carol)
    await alice_1.request({"type": "typing", "conversation_id": ab, "is_typing": True})
    for socket in (bob, alice_2):
        typing = await socket.recv_until(frame_is("typing"))
        assert typing["user_id"] == demo.alice.id
        assert typing["is_typing"] is True
        assert typing["conversation_id"] == ab
        assert typing["event_id"] and typing["ts"]
    # Bob answers; the first typing event alice_1 sees is his, so hers never came back.
    await bob.request({"type": "typing", "conversation_id": ab, "is_typing": True})
    first = await alice_1.recv_until(frame_is("typing"))
    assert first["user_id"] == demo.bob.id
    # Carol is not in ``ab``: a message she can see arrives, the typing never did.
    await alice_1.request(
        {"type": "message", "conversation_id": demo.conversations["abc"], "body": "hi"}
    )
    await carol.recv_until(frame_is("message"))
    assert carol.unconsumed(frame_is("typing")) == []


async def test_message_from_a_service_without_origin_reaches_every_socket(
    open_socket, demo
) -> None:
    ab = demo.conversations["ab"]
    alice = await connected(open_socket, demo.alice)
    bob = await connected(open_socket, demo.bob)
    conversation = await database_sync_to_async(Conversation.objects.get)(pk=ab)
    await database_sync_to_async(services.message_send)(
        conversation=conversation, sender_id=demo.alice.id, body="from REST"
    )
    for socket in (alice, bob):
        event = await socket.recv_until(frame_is("message"))
        assert event["conversation_id"] == ab
        assert event["message"]["body"] == "from REST"
        assert event["message"]["sender_id"] == demo.alice.id


@pytest.fixture(params=["realtime", "inmemory"])
def any_layer(request, settings):
    # Our layer drops repeated event ids itself; on a layer that does not (Channels'
    # in-memory one, or channels_redis swapped in for comparison) the consumer does it.
    if request.param == "inmemory":
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return request.param


async def test_an_event_heard_through_two_groups_arrives_once(any_layer, open_socket, demo) -> None:
    bob = await connected(open_socket, demo.bob)
    event = event_frame(PresenceEvent(user_id="x", status="away", last_seen=None))
    layer = get_channel_layer()
    message = realtime_event_message(event)
    for title in ("ab", "abc"):
        await layer.group_send(events.conversation_group(demo.conversations[title]), message)
    barrier = event_frame(PresenceEvent(user_id="y", status="busy", last_seen=None))
    await layer.group_send(control.user_group(demo.bob.id), realtime_event_message(barrier))
    await bob.recv_until(frame_is("presence", user_id="y"))
    seen = [f for f in bob.frames if f.get("event_id") == event["event_id"]]
    assert seen == [event]


async def test_presence_change_seen_through_two_conversations_arrives_once(
    open_socket, demo
) -> None:
    alice = await connected(open_socket, demo.alice)
    bob = await connected(open_socket, demo.bob)
    await alice.request({"type": "status", "status": "busy"})
    busy = frame_is("presence", user_id=demo.alice.id, status="busy")
    await bob.recv_until(busy)
    # A barrier sent after the first copy: any duplicate would have been queued before it.
    await alice.request(
        {"type": "typing", "conversation_id": demo.conversations["ab"], "is_typing": True}
    )
    await bob.recv_until(frame_is("typing", user_id=demo.alice.id))
    assert len([f for f in bob.frames if busy(f)]) == 1
    # Alice's own sockets hear her presence too.
    await alice.recv_until(busy)


async def test_new_conversation_is_live_without_reconnecting(open_socket, demo) -> None:
    alice = await connected(open_socket, demo.alice)
    dave = await connected(open_socket, demo.dave)
    conversation = await database_sync_to_async(services.conversation_create)(
        creator_id=demo.alice.id, title="new", participant_ids=[demo.dave.id]
    )
    new_id = str(conversation.id)
    await alice.request({"type": "message", "conversation_id": new_id, "body": "welcome"})
    event = await dave.recv_until(frame_is("message", conversation_id=new_id))
    assert event["message"]["body"] == "welcome"
    ack = await dave.request({"type": "typing", "conversation_id": new_id, "is_typing": True})
    assert ack["type"] == "ack"
    await alice.recv_until(frame_is("typing", conversation_id=new_id, user_id=demo.dave.id))


async def test_participant_added_later_hears_the_conversation(open_socket, demo) -> None:
    bob = await connected(open_socket, demo.bob)
    dave = await connected(open_socket, demo.dave)
    conversation = await database_sync_to_async(Conversation.objects.get)(
        pk=demo.conversations["ab"]
    )
    await database_sync_to_async(services.participant_add)(
        conversation=conversation, user_id=demo.dave.id
    )
    await bob.request({"type": "message", "conversation_id": str(conversation.id), "body": "hey"})
    assert (await dave.recv_until(frame_is("message")))["message"]["body"] == "hey"


async def test_typing_not_renewed_ends_by_itself(open_socket, demo, realtime_override) -> None:
    realtime_override(TYPING_TIMEOUT_SECONDS=0.3)
    ab = demo.conversations["ab"]
    alice = await connected(open_socket, demo.alice)
    bob = await connected(open_socket, demo.bob)
    started = time.monotonic()
    await alice.request({"type": "typing", "conversation_id": ab, "is_typing": True})
    await bob.recv_until(frame_is("typing", user_id=demo.alice.id, is_typing=True))
    stopped = await bob.recv_until(
        frame_is("typing", user_id=demo.alice.id, is_typing=False), within=3
    )
    assert time.monotonic() - started >= 0.3
    assert stopped["conversation_id"] == ab


async def test_typer_whose_socket_closes_stops_typing(open_socket, demo, realtime_override) -> None:
    realtime_override(TYPING_TIMEOUT_SECONDS=60)
    ab = demo.conversations["ab"]
    alice = await connected(open_socket, demo.alice)
    bob = await connected(open_socket, demo.bob)
    await alice.request({"type": "typing", "conversation_id": ab, "is_typing": True})
    await bob.recv_until(frame_is("typing", user_id=demo.alice.id, is_typing=True))
    await alice.disconnect()
    await bob.recv_until(frame_is("typing", user_id=demo.alice.id, is_typing=False), within=2)


async def test_close_control_message_closes_with_its_code(open_socket, demo) -> None:
    alice = await connected(open_socket, demo.alice)
    await get_channel_layer().group_send(
        control.user_group(demo.alice.id),
        connection_close_message(code=WS_1012_SERVICE_RESTART),
    )
    assert await alice.wait_closed() == WS_1012_SERVICE_RESTART


async def test_sockets_close_all_closes_every_local_socket_in_batches(open_socket, demo) -> None:
    sockets = [await connected(open_socket, user) for user in (demo.alice, demo.bob, demo.carol)]
    assert local_sockets.count() == 3
    closed = await sockets_close_all(code=WS_1012_SERVICE_RESTART, batch_size=2, pause_seconds=0)
    assert closed == 3
    for socket in sockets:
        assert await socket.wait_closed() == WS_1012_SERVICE_RESTART
