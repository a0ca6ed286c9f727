"""One event loop's expiry schedule: many sockets, one timer, nothing left behind."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import datetime, timedelta

from django.utils import timezone

from accounts.clock import TokenClock
from accounts.expiry import ExpiryEntry, ExpirySchedule
from tests.support.async_poll import async_wait_until
from tests.support.clock import MovableClock


class Socket:
    def __init__(self, name: str) -> None:
        self.name = name
        self.expired = 0

    def token_expired(self) -> None:
        self.expired += 1


def _schedule(clock: MovableClock) -> ExpirySchedule:
    return ExpirySchedule(clock=clock)  # type: ignore[arg-type]


async def _settled() -> None:
    """Let the callbacks the clock queued with ``call_soon`` run."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_each_socket_is_told_at_its_own_expiry_and_not_before() -> None:
    clock = MovableClock(timezone.now())
    schedule = _schedule(clock)
    order = list(range(1, 201))
    random.Random(7).shuffle(order)
    sockets = {seconds: Socket(f"s{seconds}") for seconds in order}
    for seconds in order:
        schedule.add(sockets[seconds], clock.now() + timedelta(seconds=seconds))
    assert len(schedule) == 200

    for elapsed in range(1, 201):
        clock.advance(0.5)
        await _settled()
        assert sockets[elapsed].expired == 0  # half a second early: still open
        clock.advance(0.5)
        await _settled()
        assert [s.expired for s in sockets.values() if s.expired] == [1] * elapsed
        assert sockets[elapsed].expired == 1
        assert len(schedule) == 200 - elapsed


async def test_a_removed_socket_is_never_told_and_leaves_nothing_behind() -> None:
    clock = MovableClock(timezone.now())
    schedule = _schedule(clock)
    rng = random.Random(11)
    sockets = [Socket(f"s{i}") for i in range(300)]
    entries: dict[int, ExpiryEntry] = {}
    for index, socket in enumerate(sockets):
        # Equal expiries too: several sockets of one token, or tokens issued in a batch.
        entries[index] = schedule.add(socket, clock.now() + timedelta(seconds=rng.randint(1, 60)))
    gone = set(rng.sample(range(300), 150))
    for index in gone:
        schedule.remove(entries[index])
        schedule.remove(entries[index])  # twice: a socket stopped by two paths
    assert len(schedule) == 150
    assert all(entries[index].index == -1 for index in gone)

    clock.advance(30)
    await _settled()
    due = {i for i, e in entries.items() if i not in gone and e.when <= clock.now()}
    assert {i for i, s in enumerate(sockets) if s.expired} == due
    assert len(schedule) == 150 - len(due)

    for entry in entries.values():
        schedule.remove(entry)
    assert len(schedule) == 0
    clock.advance(60)
    await _settled()
    assert {i for i, s in enumerate(sockets) if s.expired} == due  # nobody else, ever
    assert all(s.expired <= 1 for s in sockets)


async def test_an_earlier_expiry_added_later_is_not_kept_waiting() -> None:
    clock = MovableClock(timezone.now())
    schedule = _schedule(clock)
    late, early = Socket("late"), Socket("early")
    schedule.add(late, clock.now() + timedelta(hours=1))
    schedule.add(early, clock.now() + timedelta(seconds=1))
    clock.advance(1)
    await _settled()
    assert (early.expired, late.expired) == (1, 0)


async def test_a_socket_whose_time_has_passed_is_told_at_once() -> None:
    clock = MovableClock(timezone.now())
    schedule = _schedule(clock)
    socket = Socket("past")
    schedule.add(socket, clock.now() - timedelta(seconds=1))
    await _settled()
    assert socket.expired == 1
    assert len(schedule) == 0


class CountingClock(TokenClock):
    """The real clock, keeping every timer it set on the loop until it fires."""

    def __init__(self) -> None:
        self.handles: set[asyncio.TimerHandle] = set()

    def call_at(
        self, when: datetime, callback: Callable[..., object], *args: object
    ) -> asyncio.TimerHandle:
        def fire() -> None:
            self.handles.discard(handle)
            callback(*args)

        handle = super().call_at(when, fire)
        self.handles.add(handle)
        return handle

    def live(self) -> int:
        """Timers set and neither fired nor cancelled."""
        return sum(1 for handle in self.handles if not handle.cancelled())


async def test_the_loop_holds_one_timer_for_every_socket() -> None:
    clock = CountingClock()
    schedule = ExpirySchedule(clock=clock)
    now = timezone.now()
    entries = [schedule.add(Socket(f"s{i}"), now + timedelta(minutes=10 + i)) for i in range(100)]
    assert clock.live() == 1
    soon = Socket("soon")
    schedule.add(soon, timezone.now() + timedelta(milliseconds=50))
    assert clock.live() == 1  # the earlier expiry replaced the timer
    await async_wait_until(lambda: soon.expired == 1, timeout=5, what="the earliest expiry")
    for entry in entries:
        schedule.remove(entry)
    assert len(schedule) == 0
    assert clock.live() == 0  # the last socket gone takes the timer with it
