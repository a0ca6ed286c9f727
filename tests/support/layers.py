"""Layers on a real redis-server, tuned to notice a failure in tenths of a second."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from realtime_layer import RealtimeChannelLayer


def make_layer(url: str, instance_id: str, **overrides: object) -> RealtimeChannelLayer:
    options: dict[str, object] = {
        "hosts": url,
        "instance_id": instance_id,
        "socket_timeout": 1.0,
        "connect_timeout": 0.5,
        "probe_interval": 0.2,
        "backoff_min": 0.02,
        "backoff_max": 0.2,
    }
    options.update(overrides)
    return RealtimeChannelLayer(**options)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def layer_pair(
    url: str, **overrides: object
) -> AsyncIterator[tuple[RealtimeChannelLayer, RealtimeChannelLayer]]:
    """Two instances' layers on one Redis, closed afterwards."""
    a, b = make_layer(url, "inst-a", **overrides), make_layer(url, "inst-b", **overrides)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def receive_within(
    layer: RealtimeChannelLayer, channel: str, seconds: float = 2.0
) -> dict[str, Any]:
    async with asyncio.timeout(seconds):
        message: dict[str, Any] = await layer.receive(channel)
        return message


async def nothing_within(layer: RealtimeChannelLayer, channel: str, seconds: float = 0.3) -> bool:
    """Whether ``channel`` stays empty for ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            await layer.receive(channel)
    except TimeoutError:
        return True
    return False
