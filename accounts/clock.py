"""The time a token's expiry is judged by (docs/auth.md, "Expiry").

Every read of the time against a token's ``expires_at`` goes through ``token_clock``: its
issue, the database lookups, the token cache and the expiry schedule that closes a socket
when its token expires (``accounts.expiry``). One seam, so a test moves this clock past an
expiry instead of sleeping until it comes (``tests/support/clock.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from django.utils import timezone


class TokenClock:
    """Wall time, and timers on the running event loop that fire at a wall time."""

    def now(self) -> datetime:
        return timezone.now()

    def call_at(
        self, when: datetime, callback: Callable[..., object], *args: object
    ) -> asyncio.TimerHandle:
        """Run ``callback(*args)`` on the running loop once ``now()`` has reached ``when``."""
        delay = max(0.0, (when - self.now()).total_seconds())
        return asyncio.get_running_loop().call_later(delay, callback, *args)


token_clock = TokenClock()
