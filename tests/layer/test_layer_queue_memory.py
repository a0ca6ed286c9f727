"""A channel's queue holds no container it does not use, and remembers dedup keys compactly."""

from __future__ import annotations

import asyncio

from realtime_layer import RealtimeChannelLayer
from realtime_layer.queues import SEEN_KEYS_PER_CHANNEL


async def test_an_idle_channel_holds_no_queue_and_a_drained_one_lets_it_go() -> None:
    layer = RealtimeChannelLayer()
    channel = await layer.new_channel()
    chan = layer._channels[channel]
    assert chan.items == () and chan.waiters == () and chan.seen is None

    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)
    assert len(chan.waiters) == 1
    await layer.send(channel, {"type": "a", "dedup_key": "k1"})
    await layer.send(channel, {"type": "b"})
    assert (await waiting)["type"] == "a"
    assert (await layer.receive(channel))["type"] == "b"

    assert chan.items == () and chan.waiters == ()


async def test_dedup_keys_of_any_form_are_delivered_once_within_the_window() -> None:
    layer = RealtimeChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("user.1", channel)
    await layer.group_add("conv.1", channel)
    keys = ["3f2504e0-4f89-11d3-9a0c-0305e82c3301", "3F2504E0-4F89-11D3-9A0C-0305E82C3301", "x"]
    for key in keys:
        await layer.group_send("user.1", {"type": "e", "dedup_key": key})
        await layer.group_send("conv.1", {"type": "e", "dedup_key": key})

    received = [(await layer.receive(channel))["dedup_key"] for _ in keys]
    assert received == keys  # the upper-case id is another key, not a duplicate
    assert layer._channels[channel].items == ()
    assert layer.counters()["duplicates_dropped"] == len(keys)


async def test_only_the_last_keys_are_remembered() -> None:
    layer = RealtimeChannelLayer(capacity=SEEN_KEYS_PER_CHANNEL * 2)
    channel = await layer.new_channel()
    for n in range(SEEN_KEYS_PER_CHANNEL + 1):
        await layer.send(channel, {"type": "e", "dedup_key": f"k{n}"})
    seen = layer._channels[channel].seen
    assert seen is not None and len(seen) == SEEN_KEYS_PER_CHANNEL

    await layer.send(channel, {"type": "e", "dedup_key": f"k{SEEN_KEYS_PER_CHANNEL}"})
    await layer.send(channel, {"type": "e", "dedup_key": "k0"})  # forgotten: accepted again
    assert layer.counters()["duplicates_dropped"] == 1
