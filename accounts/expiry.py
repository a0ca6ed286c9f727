"""Every socket's token expiry on one event loop, served by one timer (docs/auth.md, "Expiry").

A timer per socket (``loop.call_later``) cost each idle socket a ``TimerHandle``, its
arguments, a bound method and its place in the loop's own heap: about 0.8 KiB, for an
event that comes once in 30 days. Here each socket is one small entry in a binary heap
ordered by ``expires_at``, and the loop holds one timer, for the earliest. When it fires,
every entry due by then is taken out and its socket told (``token_expired``), so a socket
still closes the moment its token expires, not at some later sweep.

Each entry knows its place in the heap, so a socket that goes away (``ExpirySchedule.remove``,
from ``authority_stop``) is taken out at once, in O(log n): nothing of it is left behind
until its token's expiry would have come.
"""

from __future__ import annotations

import asyncio
import weakref
from datetime import datetime
from typing import Protocol

from accounts.clock import TokenClock, token_clock


class Expiring(Protocol):
    """What the schedule tells when the time is up (``SocketAuthorityMixin``)."""

    def token_expired(self) -> None: ...


class ExpiryEntry:
    """One socket's place in the schedule; the socket keeps it to leave the schedule."""

    __slots__ = ("index", "socket", "when")

    def __init__(self, when: datetime, socket: Expiring, index: int) -> None:
        self.when = when
        self.socket = socket
        self.index = index  # its place in the heap; -1 once out of it


class ExpirySchedule:
    """The expiries of one event loop's sockets, with one timer for the earliest."""

    def __init__(self, *, clock: TokenClock = token_clock) -> None:
        self._clock = clock
        self._heap: list[ExpiryEntry] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: datetime | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, socket: Expiring, when: datetime) -> ExpiryEntry:
        """Tell ``socket`` once the clock reaches ``when``; keep the entry to ``remove`` it."""
        entry = ExpiryEntry(when, socket, len(self._heap))
        self._heap.append(entry)
        self._sift_up(entry.index)
        if self._timer_when is None or when < self._timer_when:
            self._arm()
        return entry

    def remove(self, entry: ExpiryEntry) -> None:
        """Take ``entry`` out (a no-op if it is out already: fired, or removed before)."""
        heap = self._heap
        index = entry.index
        if index < 0 or index >= len(heap) or heap[index] is not entry:
            return
        entry.index = -1
        last = heap.pop()
        if last is not entry:
            heap[index] = last
            last.index = index
            self._sift_down(self._sift_up(index))
        if not heap and self._timer is not None:
            # Nothing left to wait for. An earliest entry removed with others left keeps the
            # timer: it fires early once, finds nothing due and waits for the next.
            self._timer.cancel()
            self._timer = self._timer_when = None

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_when = None
        if self._heap:
            when = self._heap[0].when
            self._timer = self._clock.call_at(when, self._fire)
            self._timer_when = when

    def _fire(self) -> None:
        self._timer = self._timer_when = None
        now = self._clock.now()
        heap = self._heap
        due: list[Expiring] = []
        while heap and heap[0].when <= now:
            first = heap[0]
            last = heap.pop()
            if last is not first:
                heap[0] = last
                last.index = 0
                self._sift_down(0)
            first.index = -1
            due.append(first.socket)
        self._arm()
        for socket in due:
            socket.token_expired()

    # -- the heap, each entry's index kept with it ------------------------------------------

    def _sift_up(self, index: int) -> int:
        heap = self._heap
        entry = heap[index]
        while index > 0:
            parent = (index - 1) // 2
            above = heap[parent]
            if above.when <= entry.when:
                break
            heap[index] = above
            above.index = index
            index = parent
        heap[index] = entry
        entry.index = index
        return index

    def _sift_down(self, index: int) -> int:
        heap = self._heap
        size = len(heap)
        entry = heap[index]
        while True:
            child = 2 * index + 1
            if child >= size:
                break
            if child + 1 < size and heap[child + 1].when < heap[child].when:
                child += 1
            below = heap[child]
            if entry.when <= below.when:
                break
            heap[index] = below
            below.index = index
            index = child
        heap[index] = entry
        entry.index = index
        return index


_schedules: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ExpirySchedule] = (
    weakref.WeakKeyDictionary()
)


def expiry_schedule() -> ExpirySchedule:
    """The running event loop's schedule."""
    loop = asyncio.get_running_loop()
    schedule = _schedules.get(loop)
    if schedule is None:
        schedule = _schedules[loop] = ExpirySchedule()
    return schedule
