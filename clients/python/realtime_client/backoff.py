"""When to reconnect: full-jitter backoff, the ``1013`` hint, the ``1012`` fast path.

Sockets dropped together (an instance died, Redis restarted) must not come back together, so
every delay is drawn at random: attempt ``n`` waits uniformly in ``[0, min(cap, base * 2**n))``
("full jitter"). Two closes say more than a drop and are honoured as the contract asks:

- ``1013`` with the reason ``retry_after_ms=<N>``: the instance sheds connects and says when
  to come back; wait uniformly in ``[N, 2N)`` ms, so the retries spread over the next window
  instead of landing on its first millisecond. Without a (valid) reason: plain backoff.
  An upgrade refused with ``503`` before the handshake carries the same hint in
  ``X-Retry-After-Ms`` (``Retry-After`` in seconds as a fallback) and is honoured alike.
- ``1012``: the instance drains and another is ready: reconnect at once (a small jitter) to the
  next URL.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Final

from realtime_client.close_codes import (
    WS_1012_SERVICE_RESTART,
    WS_1013_TRY_AGAIN_LATER,
    WS_4429_TOO_MANY,
)

Random = Callable[[], float]  # uniform in [0, 1), as random.random

_HINT: Final = re.compile(r"^\s*retry_after_ms=(\d{1,9})\s*$")


def retry_after_ms(reason: str | None) -> int | None:
    """``N`` from a close reason ``retry_after_ms=<N>`` (a positive integer); else None."""
    if not reason:
        return None
    found = _HINT.match(reason)
    if found is None:
        return None
    value = int(found.group(1))
    return value if value > 0 else None


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays, in seconds."""

    base_seconds: float = 0.5
    cap_seconds: float = 30.0
    # After 1012 another instance is ready: only enough jitter to spread a drained instance's
    # sockets over a moment.
    restart_jitter_seconds: float = 0.25
    # 4429 (too many sockets, or flooding): start as if this were the fifth failure.
    too_many_attempts: int = 4

    def full_jitter(self, attempt: int, random: Random) -> float:
        """Uniform in ``[0, min(cap, base * 2**attempt))``."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2.0 ** min(attempt, 32))
        return random() * ceiling

    def hinted(self, hint_ms: int, random: Random) -> float:
        """Uniform in ``[N, 2N)`` milliseconds for a server's hint ``N``: the shed clients
        come back spread over the time the instance asked for."""
        return (hint_ms + random() * hint_ms) / 1000.0

    def after_refusal(self, headers: Mapping[str, str], attempt: int, random: Random) -> float:
        """The delay after an upgrade refused with ``503`` (``X-Retry-After-Ms``, else
        ``Retry-After`` in seconds), the handshake-less form of ``1013``."""
        hint = retry_after_ms(f"retry_after_ms={headers.get('X-Retry-After-Ms', '')}")
        if hint is None:
            seconds = headers.get("Retry-After", "")
            hint = int(seconds) * 1000 if seconds.isdigit() and int(seconds) > 0 else None
        if hint is None:
            return self.full_jitter(attempt, random)
        return self.hinted(hint, random)

    def after_close(
        self, code: int | None, reason: str | None, attempt: int, random: Random
    ) -> float:
        """The delay before reconnecting after a socket closed with ``code``/``reason``
        (``attempt``: failures since the last good connect, 0 for the first)."""
        if code == WS_1012_SERVICE_RESTART:
            return random() * self.restart_jitter_seconds
        if code == WS_1013_TRY_AGAIN_LATER:
            hint = retry_after_ms(reason)
            if hint is not None:
                return self.hinted(hint, random)
        if code == WS_4429_TOO_MANY:
            attempt = max(attempt, self.too_many_attempts)
        return self.full_jitter(attempt, random)
