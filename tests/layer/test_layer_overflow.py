"""Bounded queues and their overflow policies (local mode; docs/channel-layer.md)."""

from __future__ import annotations

import pytest

from realtime_layer import ChannelFull, RealtimeChannelLayer
from tests.support.clock import skew_clocks

OVERFLOW = {"type": "channel.overflow"}


def event(n: int, **extra: object) -> dict[str, object]:
    return {"type": "realtime.event", "event": {"n": n}, "dedup_key": f"e{n}", **extra}


async def drain(layer: RealtimeChannelLayer, channel: str) -> list[dict]:
    received = []
    while layer.counters()["queued"]:
        received.append(await layer.receive(channel))
    return received


async def test_refuse_keeps_the_oldest_and_refuses_the_newest() -> None:
    layer = RealtimeChannelLayer(capacity=10)
    slow = await layer.new_channel()
    await layer.group_add("conv.busy", slow)

    for n in range(10_000):
        await layer.group_send("conv.busy", event(n))

    assert [m["event"]["n"] for m in await drain(layer, slow)] == list(range(10))
    counters = layer.counters()
    assert counters["group_full_dropped"] == 9_990
    assert counters["queue_overflows"] == 9_990
    assert counters["delivered_local"] == 10


async def test_refuse_raises_channel_full_on_a_local_send_even_for_ephemeral() -> None:
    layer = RealtimeChannelLayer(capacity=2)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "typing", "ephemeral": True})
    await layer.send(channel, {"type": "m"})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "typing", "ephemeral": True})
    assert [m["type"] for m in await drain(layer, channel)] == ["typing", "m"]
    assert layer.counters()["channel_full"] == 1


async def test_close_sheds_ephemeral_first() -> None:
    layer = RealtimeChannelLayer(capacity=3)
    channel = await layer.new_channel()
    layer.set_overflow_policy(channel, "close")
    await layer.group_add("conv.t", channel)
    await layer.group_send("conv.t", {"type": "typing", "ephemeral": True, "n": 0})
    for n in (1, 2, 3):
        await layer.group_send("conv.t", {"type": "message", "n": n})
    await layer.group_send("conv.t", {"type": "typing", "ephemeral": True, "n": 4})  # no room

    assert [m["n"] for m in await drain(layer, channel)] == [1, 2, 3]
    counters = layer.counters()
    assert counters["ephemeral_shed"] == 2
    assert counters["overflow_closed"] == 0


async def test_close_puts_the_marker_first_and_drops_everything_after() -> None:
    layer = RealtimeChannelLayer(capacity=3)
    channel = await layer.new_channel()
    layer.set_overflow_policy(channel, "close")
    await layer.group_add("conv.c", channel)
    for n in range(3):
        await layer.group_send("conv.c", event(n))
    await layer.group_send("conv.c", event(3))  # durable, full, nothing to shed: overflow
    await layer.group_send("conv.c", event(4))
    with pytest.raises(ChannelFull):  # a sender (the healer) learns it was not queued
        await layer.send(channel, {"type": "connection.close", "code": 4429})

    assert await layer.receive(channel) == OVERFLOW
    assert [m["event"]["n"] for m in await drain(layer, channel)] == [0, 1, 2]
    counters = layer.counters()
    assert counters["overflow_closed"] == 1
    assert counters["overflow_dropped"] == 3
    assert counters["channel_full"] == 0  # counted as what it is: dropped after overflow


async def test_on_a_close_channel_an_expired_durable_message_means_overflow() -> None:
    layer = RealtimeChannelLayer(capacity=100, expiry=10)
    clock = skew_clocks(layer)
    closing, refusing = await layer.new_channel(), await layer.new_channel()
    layer.set_overflow_policy(closing, "close")
    for channel in (closing, refusing):
        await layer.group_add("conv.e", channel)
    await layer.group_send("conv.e", {"type": "typing", "ephemeral": True})
    await layer.group_send("conv.e", event(1))
    clock.advance(11)
    await layer.group_send("conv.e", event(2))

    # A socket 10 s behind is told to close (its client resumes); nothing is skipped silently.
    assert await layer.receive(closing) == OVERFLOW
    # A "refuse" channel follows Channels: an expired message is not delivered.
    assert (await layer.receive(refusing))["event"] == {"n": 2}
    assert layer.counters()["expired"] == 4  # two typings, event 1 on each channel


async def test_a_dedup_key_reaches_a_channel_once() -> None:
    layer = RealtimeChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("user.1", channel)
    await layer.group_add("conv.x", channel)
    await layer.group_send("user.1", event(1))
    await layer.group_send("conv.x", event(1))
    await layer.group_send("conv.x", {"type": "realtime.event", "event": {"event_id": "e1"}})

    assert len(await drain(layer, channel)) == 2  # the layer never looks inside "event"
    assert layer.counters()["duplicates_dropped"] == 1


async def test_a_refused_message_may_be_sent_again_with_its_key() -> None:
    layer = RealtimeChannelLayer(capacity=1)
    channel = await layer.new_channel()
    await layer.send(channel, event(0))
    with pytest.raises(ChannelFull):
        await layer.send(channel, event(1))
    await layer.receive(channel)
    await layer.send(channel, event(1))  # not taken for a duplicate: it was never queued
    assert (await layer.receive(channel))["event"] == {"n": 1}


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="refuse"):
        RealtimeChannelLayer().set_overflow_policy("specific.x!y", "drop-oldest")
