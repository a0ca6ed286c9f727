"""The Channels layer contract, as channels_redis (tests/test_core.py, tests/test_pubsub.py) and
Channels (tests/test_layers.py) check it on their own layers, checked on this one (local mode
and on a real redis-server). Where this layer differs on purpose, the test says what it does
instead (docs/channel-layer.md)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator

from connections.layer import ChannelFull, RealtimeChannelLayer
from tests.support.clock import skew_clocks
from tests.support.layers import nothing_within

ROOT = Path(__file__).resolve().parents[2]


def make(url: str | None, **options: object) -> RealtimeChannelLayer:
    if url is not None:
        options.setdefault("socket_timeout", 1.0)
        options["hosts"] = url
    return RealtimeChannelLayer(**options)  # type: ignore[arg-type]


@pytest.fixture(params=["local", "redis"])
def url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


@pytest.fixture
async def channel_layer(url: str | None) -> AsyncIterator[RealtimeChannelLayer]:
    layer = make(url, capacity=3, channel_capacity={"tiny": 1})
    yield layer
    await layer.flush()


# Send and receive


async def test_send_receive_on_a_named_channel(channel_layer) -> None:
    await channel_layer.send("test-channel-1", {"type": "test.message", "text": "Ahoy-hoy!"})
    assert await channel_layer.receive("test-channel-1") == {
        "type": "test.message",
        "text": "Ahoy-hoy!",
    }


async def test_send_receive_on_a_new_channel(channel_layer) -> None:
    name = await channel_layer.new_channel()
    await channel_layer.send(name, {"type": "test.message", "text": "Local only please"})
    assert (await channel_layer.receive(name))["text"] == "Local only please"


async def test_messages_arrive_in_order(channel_layer) -> None:
    for name in ("test-channel-3", await channel_layer.new_channel()):
        for n in (1, 2, 3):
            await channel_layer.send(name, {"type": f"message.{n}"})
        assert [(await channel_layer.receive(name))["type"] for _ in range(3)] == [
            "message.1",
            "message.2",
            "message.3",
        ]


async def test_receive_waits_until_a_message_comes(channel_layer) -> None:
    name = await channel_layer.new_channel(prefix="test-channel")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(channel_layer.receive(name), timeout=0.3)


async def test_a_message_is_a_copy_its_receiver_may_change(channel_layer) -> None:
    name = await channel_layer.new_channel()
    message: dict = {"type": "realtime.event", "event": {"n": [1, 2]}, "ephemeral": True}
    await channel_layer.group_add("g", name)
    await channel_layer.group_send("g", message)
    received = await channel_layer.receive(name)
    assert received == message
    received["event"]["n"].append(3)
    assert message["event"]["n"] == [1, 2]


# Capacity: the new message is refused, nothing queued is lost


async def test_send_to_a_full_channel_raises_channel_full(channel_layer) -> None:
    for name in ("test-channel-1", await channel_layer.new_channel()):
        for n in range(3):
            await channel_layer.send(name, {"type": "test.message", "n": n})
        with pytest.raises(ChannelFull):
            await channel_layer.send(name, {"type": "test.message", "n": 3})
        assert [(await channel_layer.receive(name))["n"] for _ in range(3)] == [0, 1, 2]
    assert channel_layer.counters()["channel_full"] == 2


async def test_channel_capacity_patterns(url: str | None) -> None:
    layer = make(url, capacity=3, channel_capacity={"one": 1, "big-*": 5})
    try:
        await layer.send("one", {"type": "m"})
        with pytest.raises(ChannelFull):
            await layer.send("one", {"type": "m"})
        for _ in range(5):
            await layer.send("big-queue", {"type": "m"})
        with pytest.raises(ChannelFull):
            await layer.send("big-queue", {"type": "m"})
        assert layer.get_capacity("other") == 3
    finally:
        await layer.flush()


async def test_group_send_skips_a_full_member_and_keeps_what_it_had(channel_layer) -> None:
    full = await channel_layer.new_channel()
    roomy = await channel_layer.new_channel(prefix="channel_2")
    await channel_layer.group_add("test-group", full)
    await channel_layer.group_add("test-group", roomy)
    await channel_layer.send(full, {"type": "message.0"})

    for n in (1, 2, 3):
        await channel_layer.group_send("test-group", {"type": f"message.{n}"})

    assert [(await channel_layer.receive(roomy))["type"] for _ in range(3)] == [
        "message.1",
        "message.2",
        "message.3",
    ]
    assert [(await channel_layer.receive(full))["type"] for _ in range(3)] == [
        "message.0",
        "message.1",
        "message.2",
    ]
    assert await nothing_within(channel_layer, full)
    assert channel_layer.counters()["group_full_dropped"] == 1


# Names


async def test_bad_names_are_refused(channel_layer) -> None:
    for bad in ("=+135!", "a" * 101, "with space"):
        with pytest.raises(TypeError):
            await channel_layer.send(bad, {"type": "foom"})
        with pytest.raises(TypeError):
            await channel_layer.receive(bad)
    for bad_group in ("has!bang", "a" * 101, ""):
        with pytest.raises(TypeError):
            await channel_layer.group_add(bad_group, await channel_layer.new_channel())
        with pytest.raises(TypeError):
            await channel_layer.group_send(bad_group, {"type": "x"})


async def test_receive_on_another_instances_channel_is_refused(channel_layer) -> None:
    with pytest.raises(AssertionError):
        await channel_layer.receive("not-client-prefix!local_part")


async def test_random_seed_never_repeats_names() -> None:
    layer = RealtimeChannelLayer()
    random.seed(1)
    first = await layer.new_channel()
    random.seed(1)
    assert await layer.new_channel() != first
    random.seed(1)
    one = RealtimeChannelLayer()
    random.seed(1)
    assert RealtimeChannelLayer().instance_id != one.instance_id


# Groups


async def test_groups_basic(channel_layer) -> None:
    names = [await channel_layer.new_channel(prefix=f"test-gr-chan-{n}") for n in (1, 2, 3)]
    for name in names:
        await channel_layer.group_add("test-group", name)
    await channel_layer.group_discard("test-group", names[1])
    await channel_layer.group_send("test-group", {"type": "message.1"})
    async with asyncio.timeout(1):
        assert (await channel_layer.receive(names[0]))["type"] == "message.1"
        assert (await channel_layer.receive(names[2]))["type"] == "message.1"
    assert await nothing_within(channel_layer, names[1])


async def test_groups_same_prefix(channel_layer) -> None:
    names = [await channel_layer.new_channel(prefix="test-gr-chan") for _ in range(3)]
    for name in names:
        await channel_layer.group_add("test-group", name)
    await channel_layer.group_send("test-group", {"type": "message.1"})
    async with asyncio.timeout(1):
        for name in names:
            assert (await channel_layer.receive(name))["type"] == "message.1"


async def test_discard_before_add(channel_layer) -> None:
    name = await channel_layer.new_channel(prefix="test-channel")
    await channel_layer.group_discard("test-group", name)


async def test_a_group_of_100_members(url: str | None) -> None:
    layer = make(url, capacity=100)
    try:
        names = [await layer.new_channel(prefix=f"channel{n}") for n in range(100)]
        for name in names:
            await layer.group_add("test-group", name)
        async with asyncio.timeout(1):
            await layer.group_send("test-group", {"type": "message.1"})
            for name in names:
                assert (await layer.receive(name))["type"] == "message.1"
    finally:
        await layer.flush()


async def test_named_channel_group_membership(channel_layer, url: str | None) -> None:
    if url is None:  # local mode: a named channel is this process's, like InMemoryChannelLayer
        await channel_layer.group_add("test-group", "test-gr-chan-1")
        await channel_layer.group_send("test-group", {"type": "message.1"})
        assert (await channel_layer.receive("test-gr-chan-1"))["type"] == "message.1"
        return
    # With Redis a named channel is a list shared by processes; group membership needs a
    # channel homed on one instance, so it is refused loudly rather than lost quietly.
    with pytest.raises(TypeError, match="new_channel"):
        await channel_layer.group_add("test-group", "test-gr-chan-1")


async def test_fan_out_over_10_instances(redis_url: str) -> None:
    layers = [make(redis_url, instance_id=f"host-{n}") for n in range(10)]
    try:
        members = [await layer.new_channel() for layer in layers]
        for layer, member in zip(layers, members, strict=True):
            await layer.group_add("test-group", member)
        await layers[3].group_send("test-group", {"type": "message.1"})
        async with asyncio.timeout(2):
            for layer, member in zip(layers, members, strict=True):
                assert (await layer.receive(member))["type"] == "message.1"
        await layers[7].group_discard("test-group", members[7])
        await layers[0].group_send("test-group", {"type": "message.2"})
        async with asyncio.timeout(2):
            for n, (layer, member) in enumerate(zip(layers, members, strict=True)):
                if n != 7:
                    assert (await layer.receive(member))["type"] == "message.2"
        assert await nothing_within(layers[7], members[7])
    finally:
        for layer in layers:
            await layer.close()


# Expiry: a message older than expiry is never delivered


async def test_a_message_older_than_expiry_is_not_delivered(url: str | None) -> None:
    layer = make(url, expiry=3)
    clock = skew_clocks(layer)
    try:
        named, specific = "test-expiry", await layer.new_channel()
        await layer.group_add("test-group", specific)
        await layer.send(named, {"type": "test.message", "text": "First!"})
        await layer.group_send("test-group", {"type": "test.message", "text": "First!"})
        clock.advance(2)
        for text in ("Second!", "Third!"):
            await layer.send(named, {"type": "test.message", "text": text})
            await layer.group_send("test-group", {"type": "test.message", "text": text})
        clock.advance(1.5)  # First! is 3.5 s old, the others 1.5 s

        for name in (named, specific):
            assert [(await layer.receive(name))["text"] for _ in range(2)] == ["Second!", "Third!"]
            assert await nothing_within(layer, name)
        assert layer.counters()["expired"] == 2
    finally:
        await layer.flush()


async def test_a_gone_consumers_queue_does_not_outlive_expiry(url: str | None) -> None:
    layer = make(url, expiry=60)
    clock = skew_clocks(layer)
    try:
        gone = [await layer.new_channel() for _ in range(50)]
        for name in gone:
            await layer.send(name, {"type": "nobody reads this"})
        alive = await layer.new_channel()
        await layer.group_add("conv.kept", alive)
        assert layer.counters()["channels"] == 51

        clock.advance(59)
        await layer.group_send("conv.kept", {"type": "tick"})  # any use runs the sweep
        assert layer.counters()["channels"] == 51
        clock.advance(30)  # past expiry, and past the sweep interval
        await layer.group_send("conv.kept", {"type": "tick"})

        assert layer.counters()["channels"] == 1
        assert layer.counters()["channels_expired"] == 50
        # A member is never reaped, however long it has been in its group.
        await layer.group_send("conv.kept", {"type": "still here"})
        assert [(await layer.receive(alive))["type"] for _ in range(3)] == [
            "tick",
            "tick",
            "still here",
        ]
    finally:
        await layer.flush()


# Event loops and cancellation


async def test_receive_can_be_cancelled_at_any_moment(channel_layer) -> None:
    layer = make(None, capacity=30)
    name = await layer.new_channel()
    delay = 0.0
    received = 0
    sent = 0
    while delay < 0.01:
        await layer.send(name, {"type": "test.message", "n": sent})
        sent += 1
        task = asyncio.ensure_future(layer.receive(name))
        await asyncio.sleep(delay)
        task.cancel()
        delay += 0.0001
        try:
            await task
            received += 1
        except asyncio.CancelledError:
            pass
    # Nothing was lost to a cancelled receive: what was not received is still queued.
    while received < sent:
        async with asyncio.timeout(1):
            await layer.receive(name)
        received += 1


def test_receive_from_two_event_loops(url: str | None) -> None:
    layer = make(url, capacity=3)
    first = async_to_sync(layer.new_channel)()
    second = async_to_sync(layer.new_channel)()
    async_to_sync(layer.send)(first, {"type": "test.message.1"})
    async_to_sync(layer.send)(second, {"type": "test.message.2"})

    async def listen(name: str) -> str:
        return str((await layer.receive(name))["type"])

    assert async_to_sync(listen)(second) == "test.message.2"
    assert async_to_sync(listen)(first) == "test.message.1"
    assert not layer._links  # every loop's link was closed with its loop


def test_send_from_another_event_loop_wakes_the_receiver(url: str | None) -> None:
    layer = make(url)

    async def scenario() -> str:
        name = await layer.new_channel()
        waiting = asyncio.ensure_future(layer.receive(name))
        await asyncio.sleep(0)
        await asyncio.to_thread(async_to_sync(layer.send), name, {"type": "from.thread"})
        async with asyncio.timeout(2):
            message = await waiting
        await layer.close()
        return str(message["type"])

    assert async_to_sync(scenario)() == "from.thread"


# Named channels across processes (a runworker)

WORKER = """
import asyncio, json, sys
from connections.layer import RealtimeChannelLayer

async def main():
    layer = RealtimeChannelLayer(hosts=sys.argv[1], socket_timeout=1.0)
    print("ready", flush=True)
    async with asyncio.timeout(10):
        message = await layer.receive("thumbnails")
    print(json.dumps(message), flush=True)
    await layer.close()

asyncio.run(main())
"""


async def test_a_named_channel_reaches_a_worker_in_another_process(redis_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER, redis_url, stdout=subprocess.PIPE, cwd=ROOT, env=env
    )
    layer = make(redis_url)
    try:
        assert worker.stdout is not None
        async with asyncio.timeout(10):
            assert (await worker.stdout.readline()).strip() == b"ready"
        await layer.send("thumbnails", {"type": "thumbnail.make", "id": 7})
        async with asyncio.timeout(10):
            line = await worker.stdout.readline()
            assert await worker.wait() == 0
        assert json.loads(line) == {"type": "thumbnail.make", "id": 7}
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
        await layer.close()


# A Channels consumer, unchanged


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


# Configuration


def test_an_unknown_option_is_refused_with_its_likely_meaning() -> None:
    with pytest.raises(TypeError, match=r"'capactiy' \(did you mean 'capacity'\?\)"):
        RealtimeChannelLayer(capactiy=10)
    with pytest.raises(TypeError, match="group_expiry"):
        RealtimeChannelLayer(group_expiry=10)
    with pytest.raises(ValueError, match="expiry"):
        RealtimeChannelLayer(expiry=0)


def test_the_projects_layer_settings_use_only_known_options() -> None:
    from django.conf import settings

    config: dict[str, Any] = settings.CHANNEL_LAYERS["default"]
    if config["BACKEND"] == "connections.layer.RealtimeChannelLayer":
        RealtimeChannelLayer(**config.get("CONFIG", {}))
