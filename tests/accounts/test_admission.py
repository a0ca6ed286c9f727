"""Admission: a connect the instance cannot answer within CONNECT_MAX_WAIT_MS is closed with
1013 at once, with a retry hint that spreads the shed clients over the time the instance
needs to take them; the rest get in, and no ticket outlives its connect."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from accounts.admission import (
    HINT_RATE_FLOOR,
    MIN_IN_FLIGHT,
    RATE_MIN_SAMPLES,
    RETRY_MIN_MS,
    RETRY_STEP_RATES,
    STALE_TICKET_SECONDS,
    ConnectGate,
    connect_gate,
    retry_reason,
    upgrade_refusal,
)
from accounts.auth import SheddingMiddleware, WebSocketAuthMiddleware
from realtime_project.close_codes import WS_1013_TRY_AGAIN_LATER
from tests.support.consumer import SocketClosed
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.consumer_fixtures import Demo
from tests.support.ws_client import frame_is


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _hint_ms(reason: str) -> int:
    prefix, _, value = reason.partition("=")
    assert prefix == "retry_after_ms"
    return int(value)


@pytest.mark.django_db(transaction=True)
async def test_a_connect_past_the_limit_is_told_when_to_try_again(
    open_socket, demo: Demo, realtime_override
) -> None:
    realtime_override(CONNECT_MAX_IN_FLIGHT=1)
    gate = connect_gate()
    ticket = gate.enter()  # one connect in progress already
    assert ticket is not None
    try:
        shed = await open_socket(demo.alice)
        assert await shed.wait_closed() == WS_1013_TRY_AGAIN_LATER
        assert shed.frames == []
        assert _hint_ms(shed.close_reason) >= RETRY_MIN_MS
    finally:
        gate.leave(ticket)
    # With the slot free again the same client gets in, and its ticket is given back.
    socket = await open_socket(demo.alice)
    await socket.recv_until(frame_is("connected"))
    assert gate.in_flight == 0


@pytest.mark.django_db(transaction=True)
async def test_a_burst_of_connects_all_get_an_answer_and_no_ticket_leaks(
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


async def test_a_client_gone_before_its_answer_gives_its_ticket_back() -> None:
    async def never_answers(scope: Any, receive: Any, send: Any) -> None:
        while (await receive())["type"] != "websocket.disconnect":
            pass

    inputs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in ({"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1006}):
        inputs.put_nowait(message)

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError(f"nothing is sent: {message}")

    gate = connect_gate()
    app = SheddingMiddleware(never_answers)
    running = app({"type": "websocket"}, inputs.get, send)
    assert gate.in_flight == 1
    await running
    assert gate.in_flight == 0


async def test_an_application_failing_before_its_answer_gives_its_ticket_back() -> None:
    async def fails(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise RuntimeError("the database went away")

    inputs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inputs.put_nowait({"type": "websocket.connect"})

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError(f"nothing is sent: {message}")

    gate = connect_gate()
    app = SheddingMiddleware(WebSocketAuthMiddleware(fails))
    scope = {"type": "websocket", "query_string": b"", "headers": []}
    with pytest.raises(RuntimeError):
        await app(scope, inputs.get, send)
    assert gate.in_flight == 0


def test_a_lost_ticket_stops_holding_the_gate_after_a_while(settings: Any) -> None:
    settings.REALTIME = {**settings.REALTIME, "CONNECT_MAX_WAIT_MS": 1000}
    clock = FakeClock()
    gate = ConnectGate(clock=clock)
    assert gate.enter() is not None  # its release never comes
    clock.now += 2
    assert gate.enter() is None
    clock.now += STALE_TICKET_SECONDS
    assert gate.enter() is not None
    assert gate.in_flight == 1


def test_the_hints_spread_a_burst_over_the_time_the_instance_needs(settings: Any) -> None:
    settings.REALTIME = {**settings.REALTIME, "CONNECT_RETRY_MAX_MS": 60_000}
    clock = FakeClock()
    gate = ConnectGate(clock=clock)
    gate.rate = 400.0  # connects a second, as measured
    hints = [gate.retry_after_ms() for _ in range(800)]
    assert hints == sorted(hints)
    # 800 shed clients at 400 a second: the last told to wait about 2 s, the first far less,
    # so that drawing in [N, 2N) brings them back slower than the instance takes them.
    assert hints[0] == RETRY_MIN_MS
    assert 1_400 <= hints[-1] <= 2_000
    # Time passing brings the horizon closer: a client shed a second later waits less.
    clock.now += 1.0
    assert gate.retry_after_ms() < hints[-1]


def test_a_rate_read_low_in_a_storm_does_not_send_clients_away_for_long(settings: Any) -> None:
    # A storm's first second read 20 connects a second: 2,000 shed clients spread at that
    # rate would be told to come back over 80 s; they are spread at HINT_RATE_FLOOR.
    settings.REALTIME = {**settings.REALTIME, "CONNECT_RETRY_MAX_MS": 60_000}
    gate = ConnectGate(clock=FakeClock())
    gate.rate = 20.0
    hints = [gate.retry_after_ms() for _ in range(2_000)]
    expected_last_ms = 2_000 * RETRY_STEP_RATES / HINT_RATE_FLOOR * 1000
    assert expected_last_ms * 0.9 <= hints[-1] <= expected_last_ms * 1.1
    # Admission still follows the rate as measured: no more connects let in at once.
    assert gate.limit() == MIN_IN_FLIGHT


def test_a_hint_never_exceeds_the_ceiling(settings: Any) -> None:
    settings.REALTIME = {**settings.REALTIME, "CONNECT_RETRY_MAX_MS": 3_000}
    gate = ConnectGate(clock=FakeClock())
    gate.rate = 10.0
    # Twice as many sheds as the hints' floor rate spreads over the ceiling's 3 s.
    sheds = int(2 * 3 * HINT_RATE_FLOOR / RETRY_STEP_RATES)
    assert max(gate.retry_after_ms() for _ in range(sheds)) == 3_000


def test_a_connect_waiting_past_the_budget_closes_the_gate(settings: Any) -> None:
    settings.REALTIME = {**settings.REALTIME, "CONNECT_MAX_WAIT_MS": 1000}
    clock = FakeClock()
    gate = ConnectGate(clock=clock)
    stuck = gate.enter()
    assert stuck is not None
    clock.now += 0.5
    assert gate.enter() is not None  # far under the limit, and still within the budget
    clock.now += 0.6
    assert gate.enter() is None  # the oldest has waited 1.1 s: this one would wait as long
    assert gate.shed == 1
    gate.leave(stuck)
    assert gate.enter() is not None


def test_the_limit_follows_the_rate_measured_under_load(settings: Any) -> None:
    settings.REALTIME = {
        **settings.REALTIME,
        "CONNECT_MAX_WAIT_MS": 1000,
        "CONNECT_MAX_IN_FLIGHT": 1000,
    }
    clock = FakeClock()
    gate = ConnectGate(clock=clock)
    # A queue kept full for two seconds while 600 connects complete: 300 a second.
    held = [gate.enter() for _ in range(MIN_IN_FLIGHT)]
    for _ in range(600):
        clock.now += 1 / 300
        ticket = held.pop(0)
        assert ticket is not None
        gate.leave(ticket)
        held.append(gate.enter())
    assert 280 <= gate.rate <= 320
    assert 140 <= gate.limit() <= 160  # half a second's worth
    # A hard cap below the rate's wins.
    settings.REALTIME = {**settings.REALTIME, "CONNECT_MAX_IN_FLIGHT": 10}
    assert gate.limit() == 10


def test_a_queue_that_formed_at_once_is_measured_at_its_pace(settings: Any) -> None:
    settings.REALTIME = {
        **settings.REALTIME,
        "CONNECT_MAX_WAIT_MS": 2000,
        "CONNECT_MAX_IN_FLIGHT": MIN_IN_FLIGHT,
    }
    clock = FakeClock()
    gate = ConnectGate(clock=clock)
    # The loop shares itself among the connects in flight and has 40 connects' worth of
    # work a second (each needs 15 or 35 ms of it). A burst fills the queue at once, each
    # completion lets the next connect in, and more are turned away all along.
    work: dict[int, float] = {}
    for position in range(MIN_IN_FLIGHT):
        ticket = gate.enter()
        assert ticket is not None
        work[ticket] = 0.015 if position % 2 else 0.035
    rates: list[float] = []
    tick = 0.001
    while len(rates) < 120:
        clock.now += tick
        share = tick / len(work)
        for ticket in list(work):
            work[ticket] -= share
            if work[ticket] <= 0:
                del work[ticket]
                assert gate.enter() is None  # offered more than it admits
                gate.leave(ticket)
                rates.append(gate.rate)
                admitted = gate.enter()
                assert admitted is not None
                work[admitted] = 0.015 if len(rates) % 2 else 0.035
    # Measured from the window's first completions on, never as the few a second that had
    # completed since the queue formed; the short connects finishing first make it high for
    # a moment, and within a second's worth of completions it is the loop's pace.
    assert rates[RATE_MIN_SAMPLES - 1] < 200
    assert all(30 <= rate <= 70 for rate in rates[RATE_MIN_SAMPLES - 1 :]), rates
    assert all(34 <= rate <= 46 for rate in rates[-60:]), rates


def test_clients_coming_back_slower_than_the_rate_leave_it_where_it_was(
    settings: Any,
) -> None:
    settings.REALTIME = {**settings.REALTIME, "CONNECT_MAX_WAIT_MS": 1000}
    clock = FakeClock()
    gate = ConnectGate(clock=clock)
    gate.rate = 100.0
    # Shed clients return at 60 a second, each connect taking 0.1 s: never a shed, the
    # queue never empty, and 60 a second is what arrives, not what the loop can do.
    due: list[tuple[float, int]] = []
    for step in range(180):
        clock.now = 1000.0 + step / 60
        while due and due[0][0] <= clock.now:
            gate.leave(due.pop(0)[1])
        ticket = gate.enter()
        assert ticket is not None
        due.append((clock.now + 0.1, ticket))
    assert gate.shed == 0
    assert gate.rate == 100.0
    # More completing than the rate says raises it, shed or not.
    for _ in range(240):
        clock.now += 1 / 160
        while due and due[0][0] <= clock.now:
            gate.leave(due.pop(0)[1])
        ticket = gate.enter()
        assert ticket is not None
        due.append((clock.now + 0.1, ticket))
    assert 140 <= gate.rate <= 170


def test_the_reason_names_the_hint() -> None:
    assert retry_reason(1500) == "retry_after_ms=1500"


async def test_the_server_refuses_before_the_handshake_only_what_the_gate_would_shed(
    realtime_override,
) -> None:
    realtime_override(CONNECT_MAX_IN_FLIGHT=1)
    gate = connect_gate()
    assert upgrade_refusal() is None
    ticket = gate.enter()
    assert ticket is not None
    hint = upgrade_refusal()
    assert hint is not None and hint >= RETRY_MIN_MS
    assert gate.shed == 1
    gate.leave(ticket)
    assert upgrade_refusal() is None
