"""Bounded queues: a slow consumer never grows memory, and overflow is counted (local mode)."""

from __future__ import annotations

from connections.layer import RealtimeChannelLayer


async def test_slow_consumer_keeps_only_capacity_and_learns_it_fell_behind() -> None:
    layer = RealtimeChannelLayer(capacity=10)
    assert layer.status == "local"
    slow = await layer.new_channel()
    await layer.group_add("conv.busy", slow)

    for n in range(10_000):
        event = {"type": "realtime.event", "event": {"event_id": str(n)}}
        await layer.group_send("conv.busy", event)

    assert layer.channel_depth(slow) == 10
    assert layer.channel_overflowed(slow) == 9_990
    assert layer.counters()["queue_overflows"] == 9_990
    # Drop-oldest: what is left is the newest.
    assert (await layer.receive(slow))["event"]["event_id"] == "9990"


async def test_ephemeral_messages_are_dropped_before_others() -> None:
    layer = RealtimeChannelLayer(capacity=3)
    channel = await layer.new_channel()
    await layer.group_add("conv.t", channel)
    await layer.group_send("conv.t", {"type": "typing", "ephemeral": True, "n": 0})
    await layer.group_send("conv.t", {"type": "message", "n": 1})
    await layer.group_send("conv.t", {"type": "message", "n": 2})
    await layer.group_send("conv.t", {"type": "message", "n": 3})

    assert [(await layer.receive(channel))["n"] for _ in range(3)] == [1, 2, 3]
    assert layer.channel_overflowed(channel) == 0
    assert layer.counters()["ephemeral_dropped"] == 1
