"""The sockets live on this instance, so shutdown can close them all (docs/events.md).

The consumer adds itself once registered and discards itself on disconnect. Draining on
SIGTERM calls ``sockets_close_all(code=WS_1012_SERVICE_RESTART, ...)``: the sockets close in
batches on a fixed schedule (``rate`` a second), so that their clients reach the surviving
instances at a pace those answer at once, instead of all in the same instant.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

logger = logging.getLogger(__name__)


class LiveSocket(Protocol):
    async def server_close(self, *, code: int) -> None:
        """Close the socket from the server side with ``code``."""
        ...


class LocalSockets:
    """Process-local, in insertion order (the oldest sockets are drained first)."""

    def __init__(self) -> None:
        self._sockets: dict[int, LiveSocket] = {}

    def add(self, socket: LiveSocket) -> None:
        self._sockets[id(socket)] = socket

    def discard(self, socket: LiveSocket) -> None:
        self._sockets.pop(id(socket), None)

    def count(self) -> int:
        return len(self._sockets)

    def snapshot(self) -> list[LiveSocket]:
        return list(self._sockets.values())

    def __len__(self) -> int:
        return len(self._sockets)


local_sockets = LocalSockets()


async def sockets_close_all(
    *, code: int, batch_size: int, rate: float = 0.0, pause_seconds: float = 0.0
) -> int:
    """Close every socket live now on this instance; how many were asked to close.

    With ``rate`` > 0, batch *i* starts ``i * batch_size / rate`` seconds after the first
    (a schedule, so slow batches do not stretch it); otherwise batches are ``pause_seconds``
    apart.
    """
    sockets = local_sockets.snapshot()
    size = max(1, batch_size)
    closed = 0
    began = time.monotonic()
    for start in range(0, len(sockets), size):
        if start and rate > 0:
            await asyncio.sleep(max(0.0, began + start / rate - time.monotonic()))
        elif start and pause_seconds > 0:
            await asyncio.sleep(pause_seconds)
        batch = sockets[start : start + size]
        results = await asyncio.gather(
            *(socket.server_close(code=code) for socket in batch), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                logger.warning("closing a socket for shutdown failed: %r", result)
            else:
                closed += 1
    return closed
