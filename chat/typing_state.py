"""Typing is ephemeral: one socket's "is typing" flags and their expiry (docs/protocol.md).

A ``typing: true`` that the client does not renew within ``TYPING_TIMEOUT_SECONDS`` ends by
itself, and a socket that closes ends all of its typing, so a crashed or silent client never
leaves "alice is typing..." on everyone else's screen.

A renewal only moves the flag's deadline: the one loop timer of a flag, when it falls due
early, sets itself again for the deadline. A task per renewal (cancel the old sleep, start a
new one) cost every typing frame a task, and the cancelled one a last step of its own
(docs/benchmarks.md, "Frames with orjson").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

TypingEnd = Callable[[str], Awaitable[None]]

# Expiries being emitted: the loop keeps only a weak reference to a task.
_ENDING: set[asyncio.Task[None]] = set()


class _Flag:
    __slots__ = ("deadline", "timer")

    def __init__(self, deadline: float, timer: asyncio.TimerHandle) -> None:
        self.deadline = deadline  # the loop's clock
        self.timer = timer


class TypingTimers:
    """Conversations this socket is typing in, each with its expiry timer."""

    # One per socket: no instance dict.
    __slots__ = ("_flags", "_on_expire", "timeout_seconds")

    def __init__(self, *, timeout_seconds: float, on_expire: TypingEnd) -> None:
        self.timeout_seconds = timeout_seconds
        self._on_expire = on_expire
        self._flags: dict[str, _Flag] = {}

    def active(self) -> list[str]:
        return list(self._flags)

    def started(self, conversation_id: str) -> None:
        """``typing: true`` (first or renewed): the expiry starts over."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_seconds
        flag = self._flags.get(conversation_id)
        if flag is not None:
            flag.deadline = deadline
            return
        timer = loop.call_at(deadline, self._due, conversation_id)
        self._flags[conversation_id] = _Flag(deadline, timer)

    def stopped(self, conversation_id: str) -> bool:
        """``typing: false``; True if the socket was typing there."""
        flag = self._flags.pop(conversation_id, None)
        if flag is None:
            return False
        flag.timer.cancel()
        return True

    def stop_all(self) -> list[str]:
        """Cancel every timer; the conversations the socket was still typing in."""
        ended = list(self._flags)
        for conversation_id in ended:
            self.stopped(conversation_id)
        return ended

    def _due(self, conversation_id: str) -> None:
        flag = self._flags.get(conversation_id)
        if flag is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < flag.deadline:  # renewed since the timer was set
            flag.timer = loop.call_at(flag.deadline, self._due, conversation_id)
            return
        # Forget the flag before emitting so a renewal racing the emit starts a fresh one.
        del self._flags[conversation_id]
        task = loop.create_task(
            self._expire(conversation_id), name=f"typing-expiry-{conversation_id}"
        )
        _ENDING.add(task)
        task.add_done_callback(_ENDING.discard)

    async def _expire(self, conversation_id: str) -> None:
        try:
            await self._on_expire(conversation_id)
        except Exception:
            logger.exception("typing expiry failed for conversation=%s", conversation_id)
