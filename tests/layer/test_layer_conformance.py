"""The Channels layer contract, as channels_redis (tests/test_core.py, tests/test_pubsub.py) and
Channels (tests/test_layers.py) check it on their own layers, checked on this one (local mode
and on a real redis-server). Where this layer differs on purpose, the test says what it does
instead (docs/channel-layer.md)."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from asgiref.sync import async_to_sync
from channels import DEFAULT_CHANNEL_LAYER
from channels.exceptions import InvalidChannelLayerError
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator

from realtime_layer import ChannelFull, RealtimeChannelLayer
from tests.support.async_poll import async_wait_until
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
        async with asyncio.timeout(0.3):
            await channel_layer.receive(name)


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


async def test_named_channels_in_a_group(channel_layer) -> None:
    """Channels' test_inmemorychannel.py::test_groups_basic (named channels as members): the
    members get the message, the discarded one does not, with Redis as without."""
    for name in ("test-gr-chan-1", "test-gr-chan-2", "test-gr-chan-3"):
        await channel_layer.group_add("test-group", name)
    await channel_layer.group_discard("test-group", "test-gr-chan-2")
    await channel_layer.group_send("test-group", {"type": "message.1"})
    async with asyncio.timeout(2):
        assert (await channel_layer.receive("test-gr-chan-1"))["type"] == "message.1"
        assert (await channel_layer.receive("test-gr-chan-3"))["type"] == "message.1"
    assert await nothing_within(channel_layer, "test-gr-chan-1")
    assert await nothing_within(channel_layer, "test-gr-chan-2")


async def test_group_send_to_a_full_named_member_does_not_raise(channel_layer) -> None:
    """channels_redis test_core.py::test_groups_channel_full and Channels'
    test_inmemorychannel.py::test_groups_channel_full: group_send ignores a full member, which
    keeps what it had (capacity 3 here)."""
    await channel_layer.group_add("test-group", "test-gr-chan-1")
    for n in range(5):
        await channel_layer.group_send("test-group", {"type": "message.1", "n": n})
    assert [(await channel_layer.receive("test-gr-chan-1"))["n"] for _ in range(3)] == [0, 1, 2]
    assert await nothing_within(channel_layer, "test-gr-chan-1")
    assert channel_layer.counters()["group_full_dropped"] == 2


async def test_a_named_member_gets_each_group_message_once_across_instances(
    redis_url: str,
) -> None:
    """A named channel added to a group by two instances gets each message of the group once,
    whoever sends it (the adder included: no echo), and a discard by any instance ends it."""
    one, two, three = (make(redis_url, instance_id=f"host-{n}") for n in range(3))
    try:
        await one.group_add("jobs", "worker")
        await two.group_add("jobs", "worker")
        await three.group_send("jobs", {"type": "job", "n": 1})
        await one.group_send("jobs", {"type": "job", "n": 2})
        await two.group_send("jobs", {"type": "job", "n": 3})
        received: list[int] = []
        async with asyncio.timeout(5):
            while len(received) < 3:
                received.append((await three.receive("worker"))["n"])
        assert sorted(received) == [1, 2, 3]
        assert await nothing_within(three, "worker", seconds=0.5)

        await three.group_discard("jobs", "worker")  # not an instance that added it
        await three.group_send("jobs", {"type": "job", "n": 4})
        await one.group_send("jobs", {"type": "job", "n": 5})
        assert await nothing_within(two, "worker", seconds=0.5)
        assert one.counters()["groups"] == 0
    finally:
        for layer in (one, two, three):
            await layer.flush()


async def test_a_named_member_added_from_a_short_lived_loop_keeps_receiving(
    redis_url: str,
) -> None:
    """A sync view adds a worker's channel with async_to_sync (its loop ends at once): the
    membership moves to a live loop, so another instance's group_send still reaches it."""
    holder, sender = make(redis_url, instance_id="holder"), make(redis_url, instance_id="sender")
    try:
        await asyncio.to_thread(async_to_sync(holder.group_add), "jobs", "worker")
        await holder.new_channel()  # the instance's own loop takes the membership over
        await sender.group_send("jobs", {"type": "job", "n": 1})
        async with asyncio.timeout(5):
            assert (await sender.receive("worker"))["n"] == 1
    finally:
        await holder.flush()
        await sender.flush()


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


async def test_receive_can_be_cancelled_at_any_moment(url: str | None) -> None:
    """channels_redis test_core.py::test_receive_cancel (expected to fail there), and more:
    what a cancelled receive did not return is still there for the next one."""
    layer = make(url, capacity=30)
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
    await layer.flush()


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
from realtime_layer import RealtimeChannelLayer

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
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "realtime_layer.RealtimeChannelLayer"}}
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
    if config["BACKEND"] == "realtime_layer.RealtimeChannelLayer":
        RealtimeChannelLayer(**config.get("CONFIG", {}))


# A send that runs the sweep


async def test_a_send_that_runs_the_sweep_is_still_received(url: str | None) -> None:
    """Channels' test_inmemorychannel.py::test_expiry_multi: once earlier messages expired,
    a new one sent to the channel is received, and nothing older is. The send that finds the
    channel unused for longer than expiry is also the call that runs the sweep."""
    layer = make(url, expiry=3)
    clock = skew_clocks(layer)
    try:
        for name in ("test-channel-1", await layer.new_channel()):
            for n in (1, 2, 3):
                await layer.send(name, {"type": f"message.{n}"})
            assert (await layer.receive(name))["type"] == "message.1"
            clock.advance(30)  # message.2 and .3 expired; the channel unused past expiry
            await layer.send(name, {"type": "message.4"})
            async with asyncio.timeout(2):
                assert (await layer.receive(name))["type"] == "message.4"
            assert await nothing_within(layer, name)
        assert layer.counters()["delivered_local"] == 8
    finally:
        await layer.flush()


# Ported from the reference suites: what the sections above did not check yet. Each test
# names the reference behaviour it covers; options and private attributes of the reference
# layers (serializers, key formats, receive buffers, close_pools) are theirs, not the API's.


async def test_a_receive_waiting_before_the_send_gets_the_message(channel_layer) -> None:
    """Channels' test_inmemorychannel.py::test_race_empty: a receiver that waits on a named
    channel before anything was sent to it gets the message sent afterwards."""
    receiving = asyncio.ensure_future(channel_layer.receive("test-channel-1"))
    await asyncio.sleep(0)  # the receiver is waiting (it has nothing to read yet)
    assert not receiving.done()
    await channel_layer.send("test-channel-1", {"type": "test.message", "text": "Ahoy-hoy!"})
    async with asyncio.timeout(3):
        assert await receiving == {"type": "test.message", "text": "Ahoy-hoy!"}


async def test_a_named_channel_sent_by_one_layer_is_received_by_another(redis_url: str) -> None:
    """channels_redis test_pubsub.py::test_receive_on_non_owned_general_channel: a named
    channel is nobody's: another process's layer, already waiting, receives it. (Messages are
    dicts, as the Channels spec says; the pub/sub layer also passed a bare string.)"""
    sender, receiver = make(redis_url, instance_id="sender"), make(redis_url, instance_id="other")
    try:
        receiving = asyncio.ensure_future(receiver.receive("test-channel"))
        await asyncio.sleep(0)
        await sender.send("test-channel", {"type": "message.1"})
        async with asyncio.timeout(3):
            assert await receiving == {"type": "message.1"}
    finally:
        await sender.close()
        await receiver.close()


async def test_a_single_message_expires(url: str | None) -> None:
    """Channels' test_inmemorychannel.py::test_expiry_single: a message older than expiry is
    not received, and the channel holding it is cleaned up."""
    layer = make(url, expiry=3)
    clock = skew_clocks(layer)
    try:
        await layer.send("test-channel-1", {"type": "message.1"})
        clock.advance(4)
        assert await nothing_within(layer, "test-channel-1")
        if url is None:
            clock.advance(4)  # past the next sweep: the idle, empty channel goes
            await layer.send("test-channel-2", {"type": "message.2"})
            assert layer.counters()["channels_expired"] == 1
        assert layer.counters()["expired"] == 1
    finally:
        await layer.flush()


async def test_an_unread_channels_expired_message_is_cleaned_up() -> None:
    """Channels' test_inmemorychannel.py::test_expiry_unread: a channel nobody reads again is
    reaped with its expired message when another channel is used."""
    layer = make(None, expiry=3)
    clock = skew_clocks(layer)
    await layer.send("test-channel-1", {"type": "message.1"})
    clock.advance(4)
    await layer.send("test-channel-2", {"type": "message.2"})
    assert (await layer.receive("test-channel-2"))["type"] == "message.2"
    counters = layer.counters()
    assert (counters["channels_expired"], counters["expired"], counters["channels"]) == (1, 1, 1)


async def test_messages_within_expiry_all_arrive(url: str | None) -> None:
    """channels_redis test_core.py::test_message_expiry__all_messages_under_expiration_time."""
    layer = make(url, expiry=3)
    clock = skew_clocks(layer)
    try:
        name = await layer.new_channel()
        for text in ("First!", "Second!", "Third!"):
            clock.advance(1)  # sent at 1, 2 and 3 s; received at 3 s
            await layer.send(name, {"type": "test.message", "text": text})
        async with asyncio.timeout(3):
            assert [(await layer.receive(name))["text"] for _ in range(3)] == [
                "First!",
                "Second!",
                "Third!",
            ]
    finally:
        await layer.flush()


async def test_only_the_member_holding_an_old_message_loses_it(url: str | None) -> None:
    """channels_redis test_core.py::test_message_expiry__group_send__one_channel_expires_message
    (expected to fail on channels_redis): a message sent to one member expires there, while
    group messages sent later reach both members."""
    layer = make(url, expiry=3)
    clock = skew_clocks(layer)
    try:
        one, two = await layer.new_channel(), await layer.new_channel(prefix="channel_2")
        await layer.group_add("test-group", one)
        await layer.group_add("test-group", two)
        await layer.send(one, {"type": "test.message", "text": "Zero!"})
        clock.advance(2)
        for text in ("First!", "Second!", "Third!"):
            await layer.group_send("test-group", {"type": "test.message", "text": text})
            clock.advance(1)
        clock.advance(-1)  # Zero! is 4 s old, First! 2 s
        for name in (one, two):
            assert [(await layer.receive(name))["text"] for _ in range(3)] == [
                "First!",
                "Second!",
                "Third!",
            ]
            assert await nothing_within(layer, name)
    finally:
        await layer.flush()


async def test_group_send_skips_a_member_at_capacity(channel_layer) -> None:
    """channels_redis test_core.py::test_group_send_capacity: the 4th message to a member of
    capacity 3 is not delivered; the first three are. (channels_redis logs the count; this
    layer counts it.)"""
    name = await channel_layer.new_channel()
    await channel_layer.group_add("test-group", name)
    for n in (1, 2, 3, 4):
        await channel_layer.group_send("test-group", {"type": f"message.{n}"})
    assert [(await channel_layer.receive(name))["type"] for _ in range(3)] == [
        "message.1",
        "message.2",
        "message.3",
    ]
    assert await nothing_within(channel_layer, name)
    assert channel_layer.counters()["group_full_dropped"] == 1


@pytest.fixture
def ten_hosts(redis_url: str) -> str:
    """channels_redis's MULTIPLE_TEST_HOSTS: ten databases of one server, as ten nodes."""
    return ",".join(f"{redis_url.rsplit('/', 1)[0]}/{db}" for db in range(10))


async def test_groups_over_multiple_hosts(ten_hosts: str) -> None:
    """channels_redis test_core.py::test_groups_multiple_hosts, seen from another instance
    too (a group's Redis channel lives on one of the hosts)."""
    layer, other = make(ten_hosts, capacity=100), make(ten_hosts, capacity=100)
    try:
        names = [await layer.new_channel(prefix=f"channel{n}") for n in (1, 2, 3)]
        for name in names:
            await layer.group_add("test-group", name)
        await layer.group_discard("test-group", names[1])
        await layer.group_send("test-group", {"type": "message.1"})
        await other.group_send("test-group", {"type": "message.1"})
        async with asyncio.timeout(2):
            for name in (names[0], names[2]):
                assert [(await layer.receive(name))["type"] for _ in range(2)] == ["message.1"] * 2
        assert await nothing_within(layer, names[1])
    finally:
        await layer.flush()
        await other.flush()


@pytest.mark.parametrize(("members", "seconds"), [(1, 1), (10, 1), (100, 10)])
async def test_group_send_over_multiple_hosts_in_time(
    ten_hosts: str, members: int, seconds: float
) -> None:
    """channels_redis test_core.py::test_groups_multiple_hosts_performance: group_send returns,
    and every member has the message, within the reference's time limits."""
    layer = make(ten_hosts, capacity=100)
    try:
        names = [await layer.new_channel(prefix=f"channel{n}") for n in range(members)]
        for name in names:
            await layer.group_add("test-group", name)
        async with asyncio.timeout(seconds):
            await layer.group_send("test-group", {"type": "message.1"})
        async with asyncio.timeout(seconds):
            for name in names:
                assert (await layer.receive(name))["type"] == "message.1"
    finally:
        await layer.flush()


async def test_repeated_group_send_through_async_to_sync(url: str | None) -> None:
    """channels_redis test_core.py::test_repeated_group_send_with_async_to_sync: each call
    runs on a new event loop (as from a sync view) and none fails for the previous loop's
    connections; with Redis, a member on another instance gets both."""
    layer = make(url, capacity=3)
    other = make(url, instance_id="other") if url else layer
    member = await other.new_channel()
    await other.group_add("channel_name_2", member)
    try:
        for group in ("channel_name_1", "channel_name_2", "channel_name_2"):
            await asyncio.to_thread(async_to_sync(layer.group_send), group, {"type": group})
        async with asyncio.timeout(3):
            assert [(await other.receive(member))["type"] for _ in range(2)] == [
                "channel_name_2"
            ] * 2
        assert not layer._links or layer is other  # each loop's connections closed with it
    finally:
        await other.flush()


def test_a_layer_used_from_async_to_sync_leaves_nothing_running(url: str | None) -> None:
    """channels_redis test_pubsub.py::test_layer_close and
    test_multi_event_loop_garbage_collection: no task or connection outlives the loop."""
    layer = make(url)

    async def send_and_receive() -> dict[str, Any]:
        await layer.send("TestChannel", {"type": "test.message", "text": "Ahoy-hoy!"})
        name = await layer.new_channel()
        await layer.send(name, {"type": "test.message"})
        return await layer.receive(name)

    assert async_to_sync(send_and_receive)() == {"type": "test.message"}
    assert not layer._links


def test_send_from_another_loop_then_receive_on_the_first(url: str | None) -> None:
    """channels_redis test_pubsub.py::test_send_receive_sync and test_multi_send_receive_sync:
    a channel made on one event loop receives, in order, what async_to_sync sent to it from
    new loops."""
    layer = make(url)
    loop = asyncio.new_event_loop()
    try:
        name = loop.run_until_complete(layer.new_channel())
        async_to_sync(layer.send, force_new_loop=True)(name, {"type": "test.message", "n": 0})
        send = async_to_sync(layer.send)
        send(name, {"type": "test.message", "n": 1})
        send(name, {"type": "test.message", "n": 2})

        async def three() -> list[int]:
            async with asyncio.timeout(3):
                return [(await layer.receive(name))["n"] for _ in range(3)]

        assert loop.run_until_complete(three()) == [0, 1, 2]
        loop.run_until_complete(layer.close())
    finally:
        loop.close()


def test_the_api_methods_are_coroutine_functions() -> None:
    """channels_redis test_pubsub.py::test_proxied_methods_coroutine_check, for every method
    of the Channels layer interface."""
    layer = RealtimeChannelLayer()
    for method in ("send", "receive", "new_channel", "group_add", "group_discard"):
        assert inspect.iscoroutinefunction(getattr(layer, method)), method
    for method in ("group_send", "flush", "close"):
        assert inspect.iscoroutinefunction(getattr(layer, method)), method


async def test_groups_survive_the_loss_of_every_redis_connection(redis_url: str) -> None:
    """channels_redis test_pubsub.py::test_auto_reconnect: Redis drops the layer's connections
    between group changes; after reconnecting by itself the layer's members get what another
    instance sends them, and the member that left does not."""
    layer = make(redis_url, instance_id="members", probe_interval=0.2, backoff_max=0.2)
    sender = make(redis_url, instance_id="sender")
    admin = aioredis.Redis.from_url(redis_url)
    try:
        names = [await layer.new_channel(prefix=f"test-gr-chan-{n}") for n in (1, 2, 3)]
        await layer.group_add("test-group", names[0])
        await layer.group_add("test-group", names[1])
        await admin.client_kill_filter(_type="pubsub")
        await admin.client_kill_filter(_type="normal", skipme=True)
        await layer.group_add("test-group", names[2])
        await layer.group_discard("test-group", names[1])
        await admin.client_kill_filter(_type="pubsub")
        await admin.client_kill_filter(_type="normal", skipme=True)

        async def subscribed_again() -> bool:
            return layer.status == "healthy" and b"rt:g:test-group" in {
                channel for channel in await admin.pubsub_channels()
            }

        await async_wait_until(subscribed_again, timeout=10, what="the layer resubscribed")
        await sender.group_send("test-group", {"type": "message.1"})
        async with asyncio.timeout(5):
            assert (await layer.receive(names[0]))["type"] == "message.1"
            assert (await layer.receive(names[2]))["type"] == "message.1"
        assert await nothing_within(layer, names[1])
    finally:
        await admin.aclose()
        await layer.close()
        await sender.close()


# Channels' tests/test_layers.py, with this layer as the backend


LAYER_BACKEND = "realtime_layer.RealtimeChannelLayer"


def test_a_test_backend_needs_test_config(settings) -> None:
    """Channels' test_layers.py::test_config_error."""
    settings.CHANNEL_LAYERS = {DEFAULT_CHANNEL_LAYER: {"BACKEND": LAYER_BACKEND}}
    with pytest.raises(InvalidChannelLayerError):
        channel_layers.make_test_backend(DEFAULT_CHANNEL_LAYER)


def test_a_test_backend_takes_its_test_config(settings) -> None:
    """Channels' test_layers.py::test_config_instance."""
    settings.CHANNEL_LAYERS = {
        DEFAULT_CHANNEL_LAYER: {"BACKEND": LAYER_BACKEND, "TEST_CONFIG": {"expiry": 100500}}
    }
    layer = channel_layers.make_test_backend(DEFAULT_CHANNEL_LAYER)
    assert isinstance(layer, RealtimeChannelLayer)
    assert layer.expiry == 100500


def test_changed_settings_reset_the_layers(settings) -> None:
    """Channels' test_layers.py::test_override_settings."""
    settings.CHANNEL_LAYERS = {DEFAULT_CHANNEL_LAYER: {"BACKEND": LAYER_BACKEND}}
    assert channel_layers.backends == {}
    assert isinstance(get_channel_layer(), RealtimeChannelLayer)
    assert channel_layers.backends != {}
    settings.CHANNEL_LAYERS = {DEFAULT_CHANNEL_LAYER: {"BACKEND": LAYER_BACKEND, "CONFIG": {}}}
    assert channel_layers.backends == {}


@pytest.mark.parametrize(
    ("name", "valid"), [("¯\\_(ツ)_/¯", False), ("chat", True), ("chat" * 100, False)]
)
def test_channel_and_group_name_validation(name: str, valid: bool) -> None:
    """Channels' test_layers.py::test_channel_and_group_name_validation and the two
    ..._length_error_message tests."""
    layer = RealtimeChannelLayer()
    for check, kind in (
        (layer.require_valid_channel_name, "Channel"),
        (layer.require_valid_group_name, "Group"),
    ):
        if valid:
            assert check(name)
        else:
            with pytest.raises(TypeError, match=re.escape(layer.invalid_name_error.format(kind))):
                check(name)


def test_the_deprecated_name_checks_still_work_and_warn() -> None:
    """Channels' test_layers.py::test_deprecated_valid_channel_name and ..._group_name."""
    layer = RealtimeChannelLayer()
    for check, word in ((layer.valid_channel_name, "channel"), (layer.valid_group_name, "group")):
        with pytest.warns(DeprecationWarning, match=f"valid_{word}_name is deprecated"):
            assert check(f"valid-{word}")
        with pytest.warns(DeprecationWarning), pytest.raises(TypeError):
            check("¯\\_(ツ)_/¯")
