"""``receive_nowait`` and ``receive_notify``: one future waits on a channel, nothing else."""

from __future__ import annotations

import asyncio

import pytest

from realtime_layer import RealtimeChannelLayer


async def test_receive_nowait_takes_what_is_queued_in_order_and_never_waits() -> None:
    layer = RealtimeChannelLayer()
    channel = await layer.new_channel()
    assert layer.receive_nowait(channel) is None
    await layer.send(channel, {"type": "a"})
    await layer.send(channel, {"type": "b"})
    assert layer.receive_nowait(channel) == {"type": "a"}
    assert layer.receive_nowait(channel) == {"type": "b"}
    assert layer.receive_nowait(channel) is None


async def test_a_notified_future_is_woken_by_a_send_and_the_message_stays_queued() -> None:
    layer = RealtimeChannelLayer()
    channel = await layer.new_channel()
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    layer.receive_notify(channel, waiter)
    assert not waiter.done()

    await layer.send(channel, {"type": "a"})
    async with asyncio.timeout(1):
        await waiter
    layer.receive_notify_cancel(channel, waiter)
    # The wake-up takes nothing out: the message is still counted against the capacity.
    assert len(layer._channels[channel].items) == 1
    assert layer.receive_nowait(channel) == {"type": "a"}


async def test_a_future_notified_while_a_message_is_queued_is_woken_at_once() -> None:
    layer = RealtimeChannelLayer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "a"})
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    layer.receive_notify(channel, waiter)
    assert waiter.done()
    assert layer._channels[channel].waiters == ()


async def test_a_cancelled_notification_is_not_woken_and_leaves_no_waiter() -> None:
    layer = RealtimeChannelLayer()
    channel = await layer.new_channel()
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    layer.receive_notify(channel, waiter)
    layer.receive_notify_cancel(channel, waiter)
    assert layer._channels[channel].waiters == ()
    await layer.send(channel, {"type": "a"})
    assert not waiter.done()
    assert layer.receive_nowait(channel) == {"type": "a"}


async def test_a_notified_channel_outlives_the_sweep_and_leaving_forgets_it() -> None:
    now = [0.0]
    layer = RealtimeChannelLayer(expiry=1)
    layer._clock = lambda: now[0]
    layer._next_sweep = 0.0
    channel = await layer.new_channel()
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    layer.receive_notify(channel, waiter)
    unread = await layer.new_channel()
    now[0] = 200.0
    await layer.send(await layer.new_channel(), {"type": "other"})  # runs the sweep
    assert unread not in layer._channels  # what the sweep does to a channel nobody reads
    assert channel in layer._channels

    layer.receive_notify_cancel(channel, waiter, leaving=True)
    assert channel not in layer._channels


async def test_only_this_instances_channels_can_be_polled() -> None:
    layer = RealtimeChannelLayer()
    with pytest.raises(TypeError):
        layer.receive_nowait("named-channel")
