"""Connects beyond CONNECT_MAX_IN_FLIGHT are closed with 1013 at once; the rest get in."""

from __future__ import annotations

import asyncio

import pytest

from connections.admission import connect_gate
from connections.close_codes import WS_1013_TRY_AGAIN_LATER
from tests.support.consumer import SocketClosed
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.consumer_fixtures import Demo
from tests.support.ws_client import frame_is

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_connect_past_the_limit_is_told_to_try_again(
    open_socket, demo: Demo, realtime_override
) -> None:
    realtime_override(CONNECT_MAX_IN_FLIGHT=1)
    gate = connect_gate()
    assert gate.enter()  # one connect in progress already
    try:
        shed = await open_socket(demo.alice)
        assert await shed.wait_closed() == WS_1013_TRY_AGAIN_LATER
        assert shed.frames == []
    finally:
        gate.leave()
    # With the slot free again the same client gets in, and its slot is given back.
    socket = await open_socket(demo.alice)
    await socket.recv_until(frame_is("connected"))
    assert gate.in_flight == 0


async def test_a_burst_of_connects_all_get_an_answer_and_no_slot_leaks(
    open_socket, demo: Demo, realtime_override
) -> None:
    realtime_override(CONNECT_MAX_IN_FLIGHT=2)
    sockets = await asyncio.gather(*(open_socket(demo.bob) for _ in range(6)))
    outcomes: list[object] = []
    for socket in sockets:
        try:
            await socket.recv_until(frame_is("connected"), within=3)
            outcomes.append("connected")
        except SocketClosed as closed:
            outcomes.append(closed.code)
    assert set(outcomes) == {"connected", WS_1013_TRY_AGAIN_LATER}
    assert connect_gate().in_flight == 0
