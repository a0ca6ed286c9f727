"""Per-socket flood control for client frames (docs/protocol.md, "Rate limits").

A token bucket: ``rate`` frames per second on average, bursts of up to ``burst``. A frame
refused by the bucket is a strike; a socket that piles up ``max_strikes`` strikes without
ever letting its bucket refill is flooding on purpose and gets closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum


class Verdict(Enum):
    ALLOW = "allow"
    REFUSE = "refuse"  # answer ``error rate_limited``
    CLOSE = "close"  # sustained flooding: close 4429


class TokenBucket:
    # One per socket: no instance dict.
    __slots__ = ("_clock", "_tokens", "_updated", "burst", "max_strikes", "rate", "strikes")

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        max_strikes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_strikes = max_strikes
        self._clock = clock
        self._tokens = self.burst
        self._updated = clock()
        self.strikes = 0

    def take(self) -> Verdict:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= self.burst:
            # A full bucket means the client slowed down for a while: forgive the past.
            self.strikes = 0
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return Verdict.ALLOW
        self.strikes += 1
        return Verdict.CLOSE if self.strikes >= self.max_strikes else Verdict.REFUSE
