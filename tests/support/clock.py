"""Clocks a test moves instead of sleeping until time has passed.

- ``token_time`` (a fixture): the token clock (``accounts.clock.token_clock``) standing
  still until moved; the database lookups, the token cache and the sockets' expiry schedule
  all read it. Import the fixture into a test module (``from tests.support.clock import *``).
- ``skew_clocks(layer)``: moves a channel layer's expiry clocks forward (its ``_clock`` and
  ``_wall_clock`` seams).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from accounts.clock import token_clock
from realtime_layer import RealtimeChannelLayer

__all__ = ["MovableClock", "SkewedClock", "skew_clocks", "token_time"]


@dataclass
class _Timer:
    when: datetime
    handle: asyncio.TimerHandle
    callback: Callable[..., object]
    args: tuple[object, ...]


class MovableClock:
    """Wall time standing still until ``advance``; timers fire when it passes them."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._timers: list[_Timer] = []

    def now(self) -> datetime:
        return self._now

    def call_at(
        self, when: datetime, callback: Callable[..., object], *args: object
    ) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        # A handle the loop never schedules: only ``advance`` runs it, and ``cancel()`` on it
        # is what the code under test calls when it drops the timer.
        handle = asyncio.TimerHandle(when.timestamp(), callback, args, loop)
        if when <= self._now:
            loop.call_soon(callback, *args)
        else:
            self._timers.append(_Timer(when, handle, callback, args))
        return handle

    def advance(self, seconds: float) -> None:
        """Move the clock on; every timer it passes runs on the loop, in the order they fall
        due (a cancelled one does not)."""
        self._now += timedelta(seconds=seconds)
        due = sorted((t for t in self._timers if t.when <= self._now), key=lambda t: t.when)
        self._timers = [t for t in self._timers if t.when > self._now]
        loop = asyncio.get_running_loop()
        for timer in due:
            if not timer.handle.cancelled():
                loop.call_soon(timer.callback, *timer.args)


@pytest.fixture
def token_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[MovableClock]:
    """The token clock, stopped at the test's start; ``token_time.advance(s)`` moves it."""
    clock = MovableClock(timezone.now())
    monkeypatch.setattr(token_clock, "now", clock.now)
    monkeypatch.setattr(token_clock, "call_at", clock.call_at)
    yield clock


class SkewedClock:
    """Moves a layer's expiry clocks forward without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def skew_clocks(*layers: RealtimeChannelLayer) -> SkewedClock:
    """One offset for all of ``layers``: instances agree on the time, as real ones do."""
    clock = SkewedClock()
    for layer in layers:
        layer._clock = lambda: time.monotonic() + clock.offset
        layer._wall_clock = lambda: time.time() + clock.offset
    return clock
