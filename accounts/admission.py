"""Shedding connects an instance cannot take yet (docs/protocol.md, close code 1013).

A connect is database and Redis round trips on an event loop that also serves every socket
already here. When a crashed instance's sockets all come back at once, letting every
handshake in makes each of them wait behind all the others: past Daphne's 5 s handshake
timeout they are thrown away, work done for nothing, and the survivor's own sockets wait
seconds for a pong. Counting connects in flight against a fixed bound does not help: what
a client can wait for is time, and how many connects fit in a second depends on the load.

So each event loop measures the rate at which it completes connects, and admits a connect
only while the queue ahead of it is worth at most about half of ``CONNECT_MAX_WAIT_MS`` at
that rate (and while the oldest waiting connect is younger than the whole budget, which
catches a rate that fell). Every other one is accepted and closed at once with ``1013`` and
the reason ``retry_after_ms=<N>``: the client waits a uniformly random delay in ``[N, 2N)``
ms. N grows with each shed by a slice of the time the instance needs for one connect, so
the shed clients come back spread over the time it needs to take them, a little slower than
it can (docs/registry.md, "Admission"). The hints never spread them slower than
``HINT_RATE_FLOOR`` a second: a storm's first second can read a rate far below what the loop
takes once the flood of upgrades is over.

The rate is the loop's completed-connect throughput over the last second, measured so that
neither idle time nor connects still in progress pull it down. While the gate sheds (it is
offered more than it admits) it is the time-averaged number of connects in flight over the
window divided by the window's average wait (Little's law): a burst admitted together
counts at its real pace from its first completions. Counting completions since the queue
last formed, as before, gave a few a second until the burst's connects had had time to
finish (a storm's survivor measured 4.5 a second for a moment, and each client shed then
was sent 180 ms further away). While nothing is shed, completions show only what arrived:
their count may raise the rate, never lower it, or the estimate chases its own hints down
(shed clients come back at 0.87x the rate, and a rate measured on them falls by as much
each time).
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Final

from realtime_project.conf import realtime_settings

# Enough connects at once to overlap their database and Redis waits, whatever the rate says.
MIN_IN_FLIGHT: Final = 32
# The rate assumed before this loop has measured one under load, in connects a second.
INITIAL_RATE_PER_SECOND: Final = 200.0
# Completions counted for the rate: those of the last second.
RATE_WINDOW_SECONDS: Final = 1.0
# Fewer completions than this in the window say too little to change the rate on.
RATE_MIN_SAMPLES: Final = 8
# A shed this recent means the loop was offered more than it admitted: what it completed
# meanwhile is what it can do, and may lower the rate.
SATURATED_SECONDS: Final = RATE_WINDOW_SECONDS
# The shortest retry hint: a client shed while the queue drains still waits this long.
RETRY_MIN_MS: Final = 250
# Shed clients wait uniformly in [N, 2N), so the k-th of a burst hinted N = k * step comes
# back at about ln 2 / step a second; a step of 0.8 / rate brings them at 0.87x the rate,
# leaving room for the connects nobody told to wait.
RETRY_STEP_RATES: Final = 0.8
# The hints spread shed clients at no less than this many a second, whatever the rate reads.
# The rate read in a storm's first second counts connects slowed by the flood of upgrades the
# loop is refusing at that moment: in crash storms of 2,000 clients it read 60 a second in
# one run and 420 in the next on the same machine, and the low reading told clients to come
# back up to 23 s later while the loop sat half idle (docs/benchmarks.md). A client sent back
# too early is shed again, at the price of one refusal; one sent too far is a user offline.
# Admission itself (``limit``) still follows the rate as measured. 400: an instance takes
# 495-564 connects a second on the 2-core test machine since its connect reads are batched;
# at 200, one storm in three still told its clients to wait up to 4 s (1,143 of 2,000 back
# within 5 s), against 2,000 of 2,000 in 4.1-4.5 s at 400 (docs/benchmarks.md). The balancer's
# default (deploy/haproxy.cfg, CONNECT_RATE_PER_INSTANCE) is the same figure.
HINT_RATE_FLOOR: Final = 400.0
RETRY_REASON_PREFIX: Final = "retry_after_ms="
# A ticket held this long belongs to a connect the server has given up on (Daphne drops a
# handshake after 5 s) whose release was lost: it stops counting as the oldest waiting.
STALE_TICKET_SECONDS: Final = 10.0


def retry_reason(retry_after_ms: int) -> str:
    """The close reason of a ``1013``: how long the client waits at least (docs/protocol.md)."""
    return f"{RETRY_REASON_PREFIX}{retry_after_ms}"


class ConnectGate:
    """Connects in progress on one event loop, the rate they complete at, the retry horizon."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next_ticket = 0
        # Ticket -> start time, in admission order: the first is the oldest waiting connect.
        self._started: dict[int, float] = {}
        # (completed at, waited) of the window's completions, and the sum of their waits.
        self._completions: deque[tuple[float, float]] = deque()
        self._waited_sum = 0.0
        # The integral of connects in flight over time, and (time, integral, in flight) at
        # each change within the window and the last one before it.
        self._area = 0.0
        self._area_at = clock()
        self._marks: deque[tuple[float, float, int]] = deque()
        self._busy_since: float | None = None
        self._busy_area = 0.0
        self._last_shed = -math.inf
        self.rate = INITIAL_RATE_PER_SECOND
        # When the clients shed so far are due back, spread at the rate: the next hint.
        self._horizon = 0.0
        self.shed = 0
        self.admitted = 0

    @property
    def in_flight(self) -> int:
        return len(self._started)

    @property
    def max_wait_seconds(self) -> float:
        return realtime_settings.CONNECT_MAX_WAIT_MS / 1000

    def limit(self) -> int:
        """Connects admitted at once: half the wait budget's worth at the measured rate."""
        by_rate = int(self.rate * self.max_wait_seconds / 2)
        return min(realtime_settings.CONNECT_MAX_IN_FLIGHT, max(MIN_IN_FLIGHT, by_rate))

    def oldest_wait(self, now: float | None = None) -> float:
        now = self._clock() if now is None else now
        started = self._started
        while started:
            ticket, first = next(iter(started.items()))
            if now - first < STALE_TICKET_SECONDS:
                return now - first
            self._advance(now)
            del started[ticket]
        return 0.0

    def full(self, now: float | None = None) -> bool:
        now = self._clock() if now is None else now
        oldest = self.oldest_wait(now)  # forgets stale tickets first
        return self.in_flight >= self.limit() or oldest >= self.max_wait_seconds

    def enter(self) -> int | None:
        """A ticket for a connect that may proceed; None (counted) when it must be shed."""
        now = self._clock()
        if self.full(now):
            self._count_shed(now)
            return None
        self._advance(now)
        if not self._started:
            self._busy_since = now
            self._busy_area = self._area
        ticket = self._next_ticket
        self._next_ticket += 1
        self._started[ticket] = now
        self.admitted += 1
        return ticket

    def refuse(self) -> int | None:
        """For a check before the connect exists: its retry hint (counted as shed) when the
        gate is full, else None."""
        now = self._clock()
        if not self.full(now):
            return None
        self._count_shed(now)
        return self.retry_after_ms()

    def _count_shed(self, now: float) -> None:
        self.shed += 1
        self._last_shed = now

    def _advance(self, now: float) -> None:
        """Bring the in-flight integral up to ``now``, before the count changes."""
        self._area += len(self._started) * (now - self._area_at)
        self._area_at = now
        marks = self._marks
        marks.append((now, self._area, len(self._started)))
        while len(marks) > 1 and marks[1][0] <= now - RATE_WINDOW_SECONDS:
            marks.popleft()

    def _mean_in_flight(self, now: float) -> float | None:
        """Connects in flight on average since the window's start or the queue's, whichever
        is later; None over too short a time to say."""
        start = now - RATE_WINDOW_SECONDS
        at, area, in_flight = self._marks[0]  # the last change at or before the start
        area_at_start = area + in_flight * max(0.0, start - at)
        if self._busy_since is not None and self._busy_since > start:
            start, area_at_start = self._busy_since, self._busy_area
        if now - start < RATE_WINDOW_SECONDS / 10:
            return None
        return (self._area - area_at_start) / (now - start)

    def leave(self, ticket: int) -> None:
        """The connect answered (accepted or refused) or its client went away."""
        started = self._started.get(ticket)
        if started is None:
            return
        now = self._clock()
        self._advance(now)
        del self._started[ticket]
        waited = max(now - started, 1e-6)
        completions = self._completions
        completions.append((now, waited))
        self._waited_sum += waited
        while completions[0][0] < now - RATE_WINDOW_SECONDS:
            self._waited_sum -= completions.popleft()[1]
        if len(completions) >= RATE_MIN_SAMPLES:
            if now - self._last_shed <= SATURATED_SECONDS:
                in_flight = self._mean_in_flight(now)
                if in_flight is not None:
                    mean_wait = self._waited_sum / len(completions)
                    self.rate = max(1.0, in_flight / mean_wait)
            else:
                self.rate = max(self.rate, len(completions) / RATE_WINDOW_SECONDS)
        if not self._started:
            self._busy_since = None

    def retry_after_ms(self) -> int:
        """The hint for the connect being shed now; each one pushes the next one later."""
        now = self._clock()
        rate = max(self.rate, HINT_RATE_FLOOR)
        step = RETRY_STEP_RATES / rate
        # Those admitted go first; then every client already told to wait.
        ceiling_ms = realtime_settings.CONNECT_RETRY_MAX_MS
        horizon = max(self._horizon, now + self.in_flight / rate) + step
        self._horizon = min(horizon, now + ceiling_ms / 1000)
        hint = math.ceil((self._horizon - now) * 1000)
        return int(min(ceiling_ms, max(RETRY_MIN_MS, hint)))


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


def upgrade_refusal() -> int | None:
    """For the server's check before a WebSocket handshake: the retry hint of a connect the
    gate would shed (counted as shed), or None to let the handshake go on to the application.

    A refusal here costs Daphne's HTTP parsing only; the ``1013`` after the handshake
    (``accounts.auth.SheddingMiddleware``) stays for connects that pass this check
    together and find the gate full.
    """
    try:
        gate = connect_gate()
    except RuntimeError:  # no event loop running: nothing to judge by
        return None
    return gate.refuse()
