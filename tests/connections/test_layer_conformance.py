"""The Channels layer cases channels_redis runs on itself, run on this layer (local and Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from asgiref.sync import async_to_sync
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator

from connections.layer import ChannelFull, RealtimeChannelLayer


@pytest.fixture(params=["local", "redis"])
async def channel_layer(request: pytest.FixtureRequest) -> AsyncIterator[RealtimeChannelLayer]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        layer = RealtimeChannelLayer(hosts=url, capacity=3, socket_timeout=1.0)
    else:
        layer = RealtimeChannelLayer(capacity=3)
    yield layer
    await layer.flush()


async def test_send_receive(channel_layer) -> None:
    await channel_layer.send("test-channel-1", {"type": "test.message", "text": "Ahoy-hoy!"})
    message = await channel_layer.receive("test-channel-1")
    assert message == {"type": "test.message", "text": "Ahoy-hoy!"}


async def test_send_capacity(channel_layer) -> None:
    for _ in range(3):
        await channel_layer.send("test-channel-1", {"type": "test.message"})
    with pytest.raises(ChannelFull):
        await channel_layer.send("test-channel-1", {"type": "test.message"})


async def test_send_specific_capacity() -> None:
    layer = RealtimeChannelLayer(capacity=3, channel_capacity={"one": 1})
    await layer.send("one", {"type": "test.message"})
    with pytest.raises(ChannelFull):
        await layer.send("one", {"type": "test.message"})


async def test_process_local_send_receive(channel_layer) -> None:
    name = await channel_layer.new_channel()
    await channel_layer.send(name, {"type": "test.message", "text": "Local only please"})
    assert (await channel_layer.receive(name))["text"] == "Local only please"


async def test_multi_send_receive(channel_layer) -> None:
    name = await channel_layer.new_channel()
    for n in (1, 2, 3):
        await channel_layer.send(name, {"type": f"message.{n}"})
    assert [(await channel_layer.receive(name))["type"] for _ in range(3)] == [
        "message.1",
        "message.2",
        "message.3",
    ]


async def test_reject_bad_channel(channel_layer) -> None:
    with pytest.raises(TypeError):
        await channel_layer.send("=+135!", {"type": "foom"})
    with pytest.raises(TypeError):
        await channel_layer.receive("=+135!")


async def test_reject_bad_client_prefix(channel_layer) -> None:
    with pytest.raises(AssertionError):
        await channel_layer.receive("not-client-prefix!local_part")


async def test_groups_basic(channel_layer) -> None:
    names = [await channel_layer.new_channel(prefix=f"test-gr-chan-{n}") for n in (1, 2, 3)]
    for name in names:
        await channel_layer.group_add("test-group", name)
    await channel_layer.group_discard("test-group", names[1])
    await channel_layer.group_send("test-group", {"type": "message.1"})
    async with asyncio.timeout(1):
        assert (await channel_layer.receive(names[0]))["type"] == "message.1"
        assert (await channel_layer.receive(names[2]))["type"] == "message.1"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await channel_layer.receive(names[1])


async def test_groups_same_prefix(channel_layer) -> None:
    names = [await channel_layer.new_channel(prefix="test-gr-chan") for _ in range(3)]
    for name in names:
        await channel_layer.group_add("test-group", name)
    await channel_layer.group_send("test-group", {"type": "message.1"})
    async with asyncio.timeout(1):
        for name in names:
            assert (await channel_layer.receive(name))["type"] == "message.1"


async def test_groups_channel_full(channel_layer) -> None:
    await channel_layer.group_add("test-group", "test-gr-chan-1")
    for _ in range(5):
        await channel_layer.group_send("test-group", {"type": "message.1"})
    assert channel_layer.counters()["queue_overflows"] == 2


async def test_groups_performance_100_members(channel_layer) -> None:
    channel_layer.capacity = 100
    names = []
    for n in range(100):
        name = await channel_layer.new_channel(prefix=f"channel{n}")
        await channel_layer.group_add("test-group", name)
        names.append(name)
    async with asyncio.timeout(1):
        await channel_layer.group_send("test-group", {"type": "message.1"})
        for name in names:
            assert (await channel_layer.receive(name))["type"] == "message.1"


async def test_random_names_never_repeat(channel_layer) -> None:
    import random

    random.seed(1)
    first = await channel_layer.new_channel()
    random.seed(1)
    assert await channel_layer.new_channel() != first


async def test_message_is_not_altered(channel_layer) -> None:
    name = await channel_layer.new_channel()
    message: dict = {
        "type": "realtime.event",
        "event": {"event_id": "e", "n": [1, 2]},
        "ephemeral": True,
    }
    await channel_layer.group_add("g", name)
    await channel_layer.group_send("g", message)
    received = await channel_layer.receive(name)
    assert received == message
    received["event"]["n"].append(3)  # a consumer mutating its copy affects nobody else
    assert message["event"]["n"] == [1, 2]


def test_double_receive_from_two_event_loops() -> None:
    layer = RealtimeChannelLayer(capacity=3)
    first = async_to_sync(layer.new_channel)()
    second = async_to_sync(layer.new_channel)()
    async_to_sync(layer.send)(first, {"type": "test.message.1"})
    async_to_sync(layer.send)(second, {"type": "test.message.2"})

    async def listen(name: str) -> str:
        return str((await layer.receive(name))["type"])

    assert async_to_sync(listen)(second) == "test.message.2"
    assert async_to_sync(listen)(first) == "test.message.1"


class EchoConsumer(AsyncJsonWebsocketConsumer):
    groups = ["room"]

    async def receive_json(self, content, **kwargs):
        await self.channel_layer.group_send("room", {"type": "room.event", "text": content["t"]})

    async def room_event(self, event):
        await self.send_json({"text": event["text"]})


# Channels closes stale database connections around every consumer dispatch.
@pytest.mark.django_db(transaction=True)
async def test_channels_consumer_runs_on_the_layer(settings) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "connections.layer.RealtimeChannelLayer"}}
    first = WebsocketCommunicator(EchoConsumer.as_asgi(), "/ws/")
    second = WebsocketCommunicator(EchoConsumer.as_asgi(), "/ws/")
    assert (await first.connect())[0]
    assert (await second.connect())[0]
    await first.send_json_to({"t": "hi"})
    assert await first.receive_json_from(timeout=1) == {"text": "hi"}
    assert await second.receive_json_from(timeout=1) == {"text": "hi"}
    await first.disconnect()
    await second.disconnect()
    layer = channel_layers["default"]
    assert isinstance(layer, RealtimeChannelLayer)
    assert layer.counters()["groups"] == 0  # both left the group on disconnect
    await layer.close()
