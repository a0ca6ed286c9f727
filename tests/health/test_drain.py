"""The drain sequence, in process: unhealthy at once, sockets closed 1012, registry emptied."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from django.test import AsyncClient

from connections.lifecycle import drain_hurry, drain_is_active, drain_run
from connections.registry import get_registry
from connections.sockets import local_sockets
from realtime_project.close_codes import WS_1012_SERVICE_RESTART
from tests.support.async_poll import async_wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class FakeSocket:
    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id
        self.closed_with: int | None = None
        self.closed_at: float | None = None

    async def server_close(self, *, code: int) -> None:
        self.closed_with = code
        self.closed_at = time.monotonic()
        local_sockets.discard(self)
        await get_registry().unregister(connection_id=self.connection_id, user_id="7")


async def test_drain_turns_unhealthy_then_closes_every_socket_with_1012() -> None:
    registry = get_registry()
    sockets = [FakeSocket(f"c{i}") for i in range(5)]
    for sock in sockets:
        await registry.register(connection_id=sock.connection_id, user_id="7", metadata={})
        local_sockets.add(sock)
    try:
        task = asyncio.create_task(drain_run(delay_seconds=60, batch_size=2, close_rate=0))
        await async_wait_until(drain_is_active, timeout=2)
        during = await AsyncClient().get("/api/health")
        assert during.status_code == 503
        assert during.json()["draining"] is True
        assert all(s.closed_with is None for s in sockets), "closed before the delay"
        drain_hurry()
        async with asyncio.timeout(5):
            closed = await task
    finally:
        for sock in sockets:
            local_sockets.discard(sock)
    assert closed == 5
    assert [s.closed_with for s in sockets] == [WS_1012_SERVICE_RESTART] * 5
    assert registry.local_connection_count() == 0
    assert (await registry.stats())["total_connections"] == 0


async def test_the_closes_follow_the_drain_rate_in_batches() -> None:
    registry = get_registry()
    sockets = [FakeSocket(f"p{i}") for i in range(10)]
    for sock in sockets:
        await registry.register(connection_id=sock.connection_id, user_id="7", metadata={})
        local_sockets.add(sock)
    try:
        async with asyncio.timeout(10):
            closed = await drain_run(delay_seconds=0, batch_size=2, close_rate=20)
    finally:
        for sock in sockets:
            local_sockets.discard(sock)
    assert closed == 10
    times = [s.closed_at for s in sockets if s.closed_at is not None]
    assert len(times) == 10
    # Five batches of two at 20 sockets a second: the last starts 4 x 0.1 s after the first,
    # never sooner (a schedule; a busy machine can only make it later).
    starts = [min(times[i : i + 2]) for i in range(0, 10, 2)]
    assert starts[-1] - starts[0] >= 0.4 - 0.01
    assert all(later >= earlier for earlier, later in itertools.pairwise(starts))
