"""Typing is ephemeral: one socket's "is typing" flags and their expiry (docs/protocol.md).

A ``typing: true`` that the client does not renew within ``TYPING_TIMEOUT_SECONDS`` ends by
itself, and a socket that closes ends all of its typing, so a crashed or silent client never
leaves "alice is typing..." on everyone else's screen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

TypingEnd = Callable[[str], Awaitable[None]]


class TypingTimers:
    """Conversations this socket is typing in, each with its expiry timer."""

    # One per socket: no instance dict.
    __slots__ = ("_on_expire", "_timers", "timeout_seconds")

    def __init__(self, *, timeout_seconds: float, on_expire: TypingEnd) -> None:
        self.timeout_seconds = timeout_seconds
        self._on_expire = on_expire
        self._timers: dict[str, asyncio.Task[None]] = {}

    def active(self) -> list[str]:
        return list(self._timers)

    def started(self, conversation_id: str) -> None:
        """``typing: true`` (first or renewed): the expiry starts over."""
        self._cancel(conversation_id)
        self._timers[conversation_id] = asyncio.create_task(
            self._expire_later(conversation_id), name=f"typing-expiry-{conversation_id}"
        )

    def stopped(self, conversation_id: str) -> bool:
        """``typing: false``; True if the socket was typing there."""
        return self._cancel(conversation_id)

    def stop_all(self) -> list[str]:
        """Cancel every timer; the conversations the socket was still typing in."""
        ended = list(self._timers)
        for conversation_id in ended:
            self._cancel(conversation_id)
        return ended

    def _cancel(self, conversation_id: str) -> bool:
        task = self._timers.pop(conversation_id, None)
        if task is None:
            return False
        if task is not asyncio.current_task():
            task.cancel()
        return True

    async def _expire_later(self, conversation_id: str) -> None:
        await asyncio.sleep(self.timeout_seconds)
        # Forget the timer before emitting so a renewal racing the emit starts a fresh one.
        self._timers.pop(conversation_id, None)
        try:
            await self._on_expire(conversation_id)
        except Exception:
            logger.exception("typing expiry failed for conversation=%s", conversation_id)
