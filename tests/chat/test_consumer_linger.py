"""A reconnecting socket on the real layer and a real Redis: its conversations' groups linger,
so the disconnect sends no UNSUBSCRIBE and the reconnect no SUBSCRIBE, and what is sent after
it is back arrives once (docs/channel-layer.md, "Lingering subscriptions")."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from channels.db import database_sync_to_async

from chat import services
from chat.models import Conversation
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.ws_client import frame_is

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


def calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


async def connected(open_socket: Any, user: Any) -> Any:
    socket = await open_socket(user)
    await socket.recv_until(frame_is("connected"))
    return socket


@database_sync_to_async
def send(conversation_id: str, user: Any, body: str) -> None:
    """A message by REST's path: no socket of the sender on this instance."""
    conversation = Conversation.objects.get(pk=conversation_id)
    services.message_send(conversation=conversation, sender_id=user.id, body=body)


async def test_a_reconnect_within_the_linger_costs_no_subscription_and_misses_nothing(
    open_socket: Any, demo: Any, settings: Any, redis_url: str
) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime_layer.RealtimeChannelLayer",
            "CONFIG": {"hosts": redis_url, "group_linger": 30.0},
        }
    }
    client = redis.Redis.from_url(redis_url)
    ab = demo.conversations["ab"]
    # Bob is this instance's only member of his groups.
    bob = await connected(open_socket, demo.bob)
    await bob.disconnect()
    subscribes, unsubscribes = calls(client, "subscribe"), calls(client, "unsubscribe")

    bob = await connected(open_socket, demo.bob)
    await send(ab, demo.alice, "back?")
    message = await bob.recv_until(frame_is("message", conversation_id=ab))
    assert message["message"]["body"] == "back?"
    await bob.disconnect()

    assert calls(client, "subscribe") == subscribes
    assert calls(client, "unsubscribe") == unsubscribes
    assert [f for f in bob.frames if f.get("type") == "message"] == [message]
    client.close()
