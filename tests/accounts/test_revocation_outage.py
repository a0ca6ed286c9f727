"""While an instance cannot hear other instances (its Redis link is down), the database decides.

A token revoked on another instance during the outage is refused at the handshake and its
live socket closed with 4401 within 2 s (and at once when the link comes back); a
participant removed elsewhere gets ``not_participant`` for its typing frames at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers, get_channel_layer

from accounts.models import AuthToken, token_digest
from chat.models import Participant
from realtime_project.close_codes import WS_4401_UNAUTHORIZED
from tests.support.async_poll import async_wait_until
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.consumer_fixtures import Demo
from tests.support.ws_client import frame_is

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

WITHIN_SECONDS = 2.0


async def _connected(open_socket, user):
    socket = await open_socket(user)
    await socket.recv_until(frame_is("connected"))
    return socket


@pytest.fixture
async def redis_layer(redis_factory: Callable[..., Any], settings: Any) -> AsyncIterator[Any]:
    """The stack's channel layer on a private redis-server that the test stops."""
    server = redis_factory()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime_layer.RealtimeChannelLayer",
            "CONFIG": {
                "hosts": server.url,
                "instance_id": "inst-b",
                "socket_timeout": 1.0,
                "connect_timeout": 0.5,
                "probe_interval": 0.2,
                "backoff_min": 0.02,
                "backoff_max": 0.2,
            },
        }
    }
    channel_layers.backends = {}
    yield server
    layer = get_channel_layer()
    if layer is not None:
        await layer.close()
    channel_layers.backends = {}


async def _outage(server: Any) -> None:
    await asyncio.to_thread(server.stop)
    await async_wait_until(
        lambda: get_channel_layer().status == "degraded", timeout=10, what="the layer degraded"
    )


@sync_to_async
def _revoked_elsewhere(key: str) -> None:
    """Logout on another instance: the row goes, and its message never arrives here."""
    AuthToken.objects.filter(digest=token_digest(key))._raw_delete("default")


async def test_a_token_revoked_during_an_outage_is_refused_and_closed(
    redis_layer: Any, open_socket, demo: Demo
) -> None:
    first = await _connected(open_socket, demo.alice)
    await first.disconnect()
    live = await _connected(open_socket, demo.alice)  # from the token cache
    await _outage(redis_layer)
    await _revoked_elsewhere(demo.alice.token)
    again = await open_socket(demo.alice)
    assert await again.wait_closed() == WS_4401_UNAUTHORIZED
    assert again.frames == []
    assert await live.wait_closed(within=WITHIN_SECONDS) == WS_4401_UNAUTHORIZED


async def test_a_participant_removed_during_an_outage_cannot_type_there(
    redis_layer: Any, open_socket, demo: Demo
) -> None:
    conversation = demo.conversations["ab"]
    bob = await _connected(open_socket, demo.bob)
    frame = {"type": "typing", "conversation_id": conversation, "is_typing": True}
    assert (await bob.request(frame))["type"] == "ack"
    await _outage(redis_layer)
    # Removed on another instance: the member event cannot reach this one.
    await Participant.objects.filter(
        conversation_id=conversation, user_id=int(demo.bob.id)
    ).adelete()
    error = await bob.request(frame)
    assert (error["type"], error["code"]) == ("error", "not_participant")
    other = {"type": "typing", "conversation_id": demo.conversations["abc"], "is_typing": True}
    assert (await bob.request(other))["type"] == "ack"


async def test_when_the_link_comes_back_what_it_missed_is_swept_at_once(
    redis_layer: Any, open_socket, demo: Demo, realtime_override
) -> None:
    realtime_override(TOKEN_RECHECK_SECONDS=60)  # only the recovery can trigger a sweep here
    live = await _connected(open_socket, demo.bob)
    await _outage(redis_layer)
    await _revoked_elsewhere(demo.bob.token)
    await asyncio.to_thread(redis_layer.start)
    assert await live.wait_closed(within=10) == WS_4401_UNAUTHORIZED


async def test_a_participant_removed_during_an_outage_receives_no_typing_there(
    redis_layer: Any, open_socket, demo: Demo
) -> None:
    removed, kept = demo.conversations["ab"], demo.conversations["abc"]
    alice = await _connected(open_socket, demo.alice)
    bob = await _connected(open_socket, demo.bob)
    await _outage(redis_layer)
    await Participant.objects.filter(conversation_id=removed, user_id=int(demo.bob.id)).adelete()
    for conversation in (removed, kept):
        frame = {"type": "typing", "conversation_id": conversation, "is_typing": True}
        assert (await alice.request(frame))["type"] == "ack"
    # Both went through this instance's queue for bob in order: the second arriving means
    # the first was delivered or withheld by now.
    await bob.recv_until(frame_is("typing", conversation_id=kept))
    assert bob.unconsumed(frame_is("typing", conversation_id=removed)) == []
