"""Membership reaching live sockets: added sockets follow at once, removed ones lose authority."""

from __future__ import annotations

import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction

from chat import services
from chat.event_types import MemberEvent, event_check, event_frame
from chat.healing import heal_once
from chat.layer_messages import realtime_event_message, realtime_join_message
from chat.models import Conversation
from connections.control import user_group
from tests.support.async_poll import async_wait_until
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.ws_client import frame_is

pytestmark = pytest.mark.django_db(transaction=True)


async def connected(open_socket, user):
    socket = await open_socket(user)
    await socket.recv_until(frame_is("connected"))
    return socket


@database_sync_to_async
def conversation(pk):
    return Conversation.objects.get(pk=pk)


async def test_an_added_user_follows_the_conversation_without_reconnecting(
    open_socket, demo
) -> None:
    ab = demo.conversations["ab"]
    carol = await connected(open_socket, demo.carol)
    alice = await connected(open_socket, demo.alice)
    conv = await conversation(ab)
    await database_sync_to_async(services.participants_add)(
        conversation=conv, user_ids=[demo.carol.id], by_id=demo.alice.id
    )
    member = await carol.recv_until(frame_is("member", action="added"))
    event_check(member)
    assert member["seq"] == 1
    await alice.request({"type": "message", "conversation_id": ab, "body": "welcome"})
    message = await carol.recv_until(frame_is("message"))
    assert message["seq"] == 2
    typing = await carol.request({"type": "typing", "conversation_id": ab, "is_typing": True})
    assert typing["type"] == "ack"


async def test_a_removed_user_gets_the_member_event_last_and_loses_authority(
    open_socket, demo
) -> None:
    abc = demo.conversations["abc"]
    carol = await connected(open_socket, demo.carol)
    carol_2 = await connected(open_socket, demo.carol)
    alice = await connected(open_socket, demo.alice)
    conv = await conversation(abc)
    await database_sync_to_async(services.participant_remove)(
        conversation=conv, user_id=demo.carol.id, by_id=demo.alice.id
    )
    for socket in (carol, carol_2):
        removed = await socket.recv_until(frame_is("member", action="removed"))
        assert removed["user_id"] == demo.carol.id
    await alice.request({"type": "typing", "conversation_id": abc, "is_typing": True})
    await alice.request({"type": "message", "conversation_id": abc, "body": "secret"})
    frames = [
        {"type": "typing", "conversation_id": abc, "is_typing": True},
        {"type": "message", "conversation_id": abc, "body": "x"},
        {"type": "read", "conversation_id": abc, "message_ids": [str(uuid.uuid4())]},
    ]
    for frame in frames:
        reply = await carol.request(frame)
        assert (reply["type"], reply["code"]) == ("error", "not_participant")
    # Nothing of the conversation reached carol after her removal.
    barrier = await alice.request(
        {"type": "message", "conversation_id": demo.conversations["ab"], "body": "elsewhere"}
    )
    assert barrier["type"] == "ack"
    after = carol.frames[carol.frames.index(removed) + 1 :]
    assert [f for f in after if f.get("conversation_id") == abc and f.get("type") != "error"] == []


@database_sync_to_async
def without_live_delivery(call):
    """Run a service with its live delivery lost (as in a Redis outage): only the log has it."""
    with transaction.atomic():
        result = call()
        transaction.get_connection().run_on_commit = []
    return result


async def healed(socket, predicate, *, within=5.0):
    """Run healing passes until ``socket`` has a frame matching ``predicate``."""

    async def after_a_pass():
        await heal_once(fully=True)
        try:
            return await socket.recv_until(predicate, within=0.1)
        except TimeoutError:
            return None

    # The receive is the pause between passes; anything else a pass raises fails at once.
    return await async_wait_until(
        after_a_pass,
        timeout=within,
        interval=0,
        what="the frame a healing pass brings",
        retry_on=(),
    )


async def test_healing_brings_a_conversation_whose_join_was_lost(open_socket, demo) -> None:
    ab = demo.conversations["ab"]
    carol = await connected(open_socket, demo.carol)
    conv = await conversation(ab)
    await without_live_delivery(
        lambda: services.participants_add(
            conversation=conv, user_ids=[demo.carol.id], by_id=demo.alice.id
        )
    )
    await without_live_delivery(
        lambda: services.message_send(conversation=conv, sender_id=demo.alice.id, body="m")
    )
    created = await without_live_delivery(
        lambda: services.conversation_create(
            creator_id=demo.alice.id, title="new", participant_ids=[demo.carol.id]
        )
    )
    await without_live_delivery(
        lambda: services.message_send(conversation=created, sender_id=demo.alice.id, body="n")
    )
    # One pass makes the socket follow both conversations, a later one fills what came after.
    member = await healed(carol, frame_is("member", action="added"))
    assert member["seq"] == 1
    message = await healed(carol, frame_is("message", conversation_id=ab))
    assert message["seq"] == 2
    first = await healed(carol, frame_is("message", conversation_id=str(created.id)))
    assert first["seq"] == 1
    assert [f["seq"] for f in carol.frames if f.get("conversation_id") == ab] == [1, 2]


async def test_a_late_added_event_does_not_undo_a_removal(open_socket, demo) -> None:
    abc = demo.conversations["abc"]
    carol = await connected(open_socket, demo.carol)
    conv = await conversation(abc)
    await database_sync_to_async(services.participant_remove)(
        conversation=conv, user_id=demo.carol.id, by_id=demo.alice.id
    )
    await carol.recv_until(frame_is("member", action="removed"))
    stale = event_frame(
        MemberEvent(conversation_id=abc, seq=0, user_id=demo.carol.id, action="added", by="1")
    )
    await get_channel_layer().group_send(user_group(demo.carol.id), realtime_event_message(stale))
    await get_channel_layer().group_send(
        user_group(demo.carol.id), realtime_join_message(conversation_id=abc, seq=0)
    )
    reply = await carol.request({"type": "typing", "conversation_id": abc, "is_typing": True})
    assert (reply["type"], reply["code"]) == ("error", "not_participant")
