"""Shedding connects an instance cannot take yet (docs/protocol.md, close code 1013).

A connect is several database and Redis round trips and a presence write. When a crashed
instance's sockets all come back at once, letting every handshake in means each of them
(and every frame of the sockets already here) waits behind all the others. Instead each
event loop lets at most ``CONNECT_MAX_IN_FLIGHT`` connects run at a time; one more is
accepted and closed at once with ``1013 Try Again Later``, before any database work, and
the client retries after a jittered backoff.
"""

from __future__ import annotations

import asyncio
import weakref

from realtime_project.conf import realtime_settings


class ConnectGate:
    """Connects in progress on one event loop."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.shed = 0

    def full(self) -> bool:
        return self.in_flight >= realtime_settings.CONNECT_MAX_IN_FLIGHT

    def enter(self) -> bool:
        """Take a slot; False (and counted) when there is none: close with 1013."""
        if self.full():
            self.shed += 1
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ConnectGate] = (
    weakref.WeakKeyDictionary()
)


def connect_gate() -> ConnectGate:
    """The running event loop's gate."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = ConnectGate()
    return gate
