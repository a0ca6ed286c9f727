"""A loop that reads with a timeout stops when it is cancelled, even as its read completes.

On Python 3.11 ``asyncio.wait_for`` returns the result of a read that completed in the same
loop iteration as the cancel and drops the cancel (CPython gh-86296): the loop reads on and
can never be stopped. ``asyncio.timeout`` delivers the cancel; ruff bans ``wait_for``
(TID251), and these tests hold the two loops it once made unstoppable.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import pytest
from websockets.asyncio.client import ClientConnection

from chat import healing
from tests.support.async_poll import async_wait_until
from tests.support.ws_client import WsClient


class OneFrameAtATime:
    """A connection whose next frame arrives when the test says so."""

    def __init__(self) -> None:
        self.pending: asyncio.Future[str] | None = None

    async def recv(self) -> str:
        self.pending = asyncio.get_running_loop().create_future()
        return await self.pending


async def _stopped_within(task: asyncio.Task[None], seconds: float) -> bool:
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        # A second cancel does land; the task must not outlive the test.
        task.cancel()
        await asyncio.wait({task}, timeout=seconds)
    return task in done and task.cancelled()


async def test_a_reader_cancelled_as_its_frame_arrives_stops() -> None:
    connection = OneFrameAtATime()
    client = WsClient(cast(ClientConnection, connection))

    async def keep_reading() -> None:
        while True:
            await client.drain(within=5)

    reader = asyncio.create_task(keep_reading())
    await async_wait_until(lambda: connection.pending is not None, timeout=5, what="a read")
    last_read = connection.pending
    assert last_read is not None
    # The frame and the cancel in one loop iteration: the read completes as the cancel lands.
    last_read.set_result(json.dumps({"type": "pong"}))
    reader.cancel()

    assert await _stopped_within(reader, 2), "the reader swallowed its cancel and read on"
    assert connection.pending is last_read, "a read started after the cancel"


async def test_a_healing_loop_woken_as_it_is_stopped_stops(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    passes: list[bool] = []

    async def heal_once(*, fully: bool) -> int:
        passes.append(fully)
        return 0

    monkeypatch.setattr(healing, "heal_once", heal_once)
    # No timed pass during the test: every pass is a woken one.
    settings.REALTIME = {**settings.REALTIME, "HEAL_INTERVAL_SECONDS": 60}
    loop = asyncio.create_task(healing.healing_loop())
    wake = healing._state().wake
    wake.set()
    # One woken pass, then the loop waits for the next wake.
    await async_wait_until(lambda: passes == [True], timeout=5, what="a healing pass")

    wake.set()  # a layer recovery, as the instance stops
    loop.cancel()

    assert await _stopped_within(loop, 2), "the healing loop swallowed its cancel and went on"
    assert passes == [True]
