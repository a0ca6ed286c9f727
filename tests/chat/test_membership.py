"""Membership reaching live sockets: added sockets follow at once, removed ones lose authority."""

from __future__ import annotations

import uuid

import pytest
from channels.db import database_sync_to_async

from chat import services
from chat.event_types import event_check
from chat.models import Conversation
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
