"""The consumers' own dispatch loop (``realtime_project.runtime.dispatch``) keeps Channels'
rules: one message at a time, each source in its order, a layer message left in its queue
until it is handled, ``StopConsumer`` ends the consumer and lets its channel go."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.consumer import AsyncConsumer
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer

from realtime_project.runtime.dispatch import LeanDispatchMixin
from tests.support.async_poll import async_wait_until

LAYERS = {
    "realtime": {"BACKEND": "realtime_layer.RealtimeChannelLayer", "CONFIG": {}},
    "memory": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
}


class Recorder(LeanDispatchMixin, AsyncConsumer):  # type: ignore[misc]
    """Records each message; a message with ``hold`` waits for the test's go-ahead."""

    handled: list[str]
    busy: bool
    gate: asyncio.Event
    instance: Recorder

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handled = []
        self.busy = False
        self.gate = asyncio.Event()
        type(self).instance = self

    async def dispatch(self, message: dict[str, Any]) -> None:
        assert not self.busy, "two messages dispatched at once"
        self.busy = True
        try:
            self.handled.append(message.get("text") or message["type"])
            if message.get("hold"):
                await self.gate.wait()
            if message.get("stop") or message["type"] == "websocket.disconnect":
                raise StopConsumer()
        finally:
            self.busy = False


def _consumer(alias: str) -> type[Recorder]:
    return type("Consumer", (Recorder,), {"channel_layer_alias": alias})


@pytest.fixture
def layers(settings: Any) -> None:
    settings.CHANNEL_LAYERS = LAYERS


@pytest.mark.parametrize("alias", ["realtime", "memory"])
async def test_both_sources_in_their_order_one_at_a_time(layers: None, alias: str) -> None:
    consumer = _consumer(alias)
    app = ApplicationCommunicator(consumer.as_asgi(), {"type": "websocket"})
    await app.send_input({"type": "websocket.connect"})
    await async_wait_until(lambda: getattr(consumer, "instance", None), what="the consumer")
    socket: Recorder = consumer.instance
    await async_wait_until(lambda: socket.handled == ["websocket.connect"], what="connect")
    layer = get_channel_layer(alias)
    assert layer is not None

    await layer.send(socket.channel_name, {"type": "event", "text": "e1", "hold": True})
    await async_wait_until(lambda: socket.busy, what="e1 being handled")
    for n in (2, 3):
        await layer.send(socket.channel_name, {"type": "event", "text": f"e{n}"})
        await app.send_input({"type": "websocket.receive", "text": f"c{n}"})
    socket.gate.set()
    await async_wait_until(lambda: len(socket.handled) == 6, what="everything handled")

    handled = socket.handled[1:]
    assert [m for m in handled if m.startswith("e")] == ["e1", "e2", "e3"]
    assert [m for m in handled if m.startswith("c")] == ["c2", "c3"]
    await app.send_input({"type": "websocket.disconnect", "code": 1000})
    await app.wait(timeout=2)


async def test_a_layer_message_waits_in_its_queue_until_dispatched(layers: None) -> None:
    consumer = _consumer("realtime")
    app = ApplicationCommunicator(consumer.as_asgi(), {"type": "websocket"})
    await app.send_input({"type": "websocket.connect", "hold": True})
    await async_wait_until(lambda: getattr(consumer, "instance", None), what="the consumer")
    socket: Recorder = consumer.instance
    await async_wait_until(lambda: socket.busy, what="connect being handled")
    layer = get_channel_layer("realtime")

    for n in range(3):
        await layer.send(socket.channel_name, {"type": "event", "text": f"e{n}"})
    # Nothing was taken out early: the queue's bound counts all three.
    assert len(layer._channels[socket.channel_name].items) == 3
    socket.gate.set()
    await async_wait_until(lambda: len(socket.handled) == 4, what="the events handled")
    await app.send_input({"type": "websocket.disconnect", "code": 1000})
    await app.wait(timeout=2)


async def test_stop_consumer_ends_the_loop_and_lets_the_channel_go(layers: None) -> None:
    consumer = _consumer("realtime")
    app = ApplicationCommunicator(consumer.as_asgi(), {"type": "websocket"})
    await app.send_input({"type": "websocket.connect"})
    await async_wait_until(lambda: getattr(consumer, "instance", None), what="the consumer")
    socket: Recorder = consumer.instance
    layer = get_channel_layer("realtime")
    await async_wait_until(lambda: socket.handled, what="connect")

    await layer.send(socket.channel_name, {"type": "event", "text": "last", "stop": True})
    await app.wait(timeout=2)  # the application returned, without an error
    assert socket.handled == ["websocket.connect", "last"]
    assert socket.channel_name not in layer._channels
