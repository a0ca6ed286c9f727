"""Typing flags end when not renewed in time, on a loop whose clock the test moves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from chat.typing_state import TypingTimers

TIMEOUT = 5.0


class _MovableLoop(asyncio.SelectorEventLoop):
    """A loop whose clock stands still until ``advance``: its timers fall due only then."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def _run(scenario: Callable[[_MovableLoop, TypingTimers, list[str]], Awaitable[None]]) -> None:
    loop = _MovableLoop()
    ended: list[str] = []

    async def record(conversation_id: str) -> None:
        ended.append(conversation_id)

    async def main() -> None:
        await scenario(loop, TypingTimers(timeout_seconds=TIMEOUT, on_expire=record), ended)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


async def _advance(loop: _MovableLoop, seconds: float) -> None:
    loop.now += seconds
    for _ in range(5):  # the due timer, the expiry task it starts, and that task's emit
        await asyncio.sleep(0)


def test_a_flag_not_renewed_ends_after_the_timeout() -> None:
    async def scenario(loop: _MovableLoop, timers: TypingTimers, ended: list[str]) -> None:
        timers.started("c")
        await _advance(loop, TIMEOUT - 0.1)
        assert ended == [] and timers.active() == ["c"]
        await _advance(loop, 0.2)
        assert ended == ["c"] and timers.active() == []

    _run(scenario)


def test_each_renewal_moves_the_end_to_a_full_timeout_after_it() -> None:
    async def scenario(loop: _MovableLoop, timers: TypingTimers, ended: list[str]) -> None:
        timers.started("c")
        for _ in range(3):
            await _advance(loop, TIMEOUT - 1)
            timers.started("c")
        await _advance(loop, TIMEOUT - 0.1)  # past the first timer's time, twice over
        assert ended == []
        await _advance(loop, 0.2)
        assert ended == ["c"]

    _run(scenario)


def test_a_stopped_flag_never_ends_again_and_a_new_one_starts_over() -> None:
    async def scenario(loop: _MovableLoop, timers: TypingTimers, ended: list[str]) -> None:
        timers.started("a")
        timers.started("b")
        assert timers.stopped("a") is True
        assert timers.stopped("a") is False
        assert timers.stop_all() == ["b"]
        await _advance(loop, TIMEOUT + 1)
        assert ended == []
        timers.started("a")
        await _advance(loop, TIMEOUT + 0.1)
        assert ended == ["a"]

    _run(scenario)
