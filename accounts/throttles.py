"""REST throttles on the shared cache, so they hold across instances (docs/auth.md).

Django's cache is Redis (``RedisCache`` on ``REDIS_URL``) when the instances share one, and
this process's memory in the embedded default. Each limit is a counter bumped atomically
(``INCR``) before the request runs, never a read-then-write of a history list, so parallel
requests on several instances cannot slip past it together.

- ``LoginAttemptThrottle`` on ``POST /api/auth/token``: at most ``AUTH_FAILURES_PER_MINUTE``
  failed attempts per username (``AUTH_LOCKOUT_SCOPE``: per username, or per username and
  address), and ``AUTH_FAILURES_PER_ADDRESS_PER_MINUTE`` per client address, within a minute of
  the first; a successful attempt is not counted. The username is counted as it is
  authenticated (``login_username``), so padding or another Unicode form of a name cannot buy
  a fresh counter.
- ``UserWriteThrottle`` on every REST write (POST, PUT, PATCH, DELETE): the WebSocket frame
  rate per user, ``RATE_LIMIT_BURST`` requests per ``RATE_LIMIT_BURST /
  RATE_LIMIT_FRAMES_PER_SECOND`` seconds.

Past a limit DRF answers ``429`` with ``Retry-After``. When the shared cache cannot be reached
each instance counts in its own memory instead (``_FALLBACK``): the limits then hold per
instance, which with N instances is at most N times looser, but never open; and an outage of
Redis locks out nobody who would not be locked out anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
import unicodedata
from typing import Any

from django.core.cache import BaseCache, cache
from django.core.cache.backends.locmem import LocMemCache
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from realtime_project.conf import realtime_settings

logger = logging.getLogger(__name__)

LOGIN_WINDOW_SECONDS = 60.0
_ATTEMPT_KEYS = "_login_attempt_keys"

# This instance's own counters, for while the shared cache is unreachable. Bounded: the
# local-memory cache culls a third of its entries when full, oldest first.
_FALLBACK = LocMemCache(
    "realtime-throttle-fallback",
    {"TIMEOUT": LOGIN_WINDOW_SECONDS, "OPTIONS": {"MAX_ENTRIES": 50000}},
)


def login_username(raw: str) -> str:
    """A username as ``POST /api/auth/token`` authenticates it, and as its throttle counts it.

    Trimmed (DRF's ``CharField`` strips any Unicode space, so ``"bob\u2003"`` logs in as
    ``bob``) and NFKC-normalized as ``AbstractBaseUser.normalize_username`` stores names (and
    Django's login form reads them).
    """
    return unicodedata.normalize("NFKC", raw.strip()).strip()


def _hit_in(store: BaseCache, key: str, window: float) -> int:
    timeout = max(1, math.ceil(window))
    if store.add(key, 1, timeout):
        store.add(f"{key}:start", time.time(), timeout)
        return 1
    try:
        count = int(store.incr(key))
    except ValueError:  # expired between add and incr
        store.add(key, 1, timeout)
        store.add(f"{key}:start", time.time(), timeout)
        return 1
    if count == 1:
        # INCR recreated a key that had just expired: it must not live forever.
        store.touch(key, timeout)
    return count


# After the shared cache failed, requests skip it for this long: a hung Redis must not cost
# every login its socket timeout, nor the log a line per request.
SHARED_CACHE_RETRY_SECONDS = 2.0
_shared_down_until = 0.0


def _hit(key: str, window: float) -> tuple[BaseCache, int]:
    """Count one hit on ``key`` (the count lives ``window`` seconds from its first hit), in the
    shared cache, or in this instance's memory while that cannot be reached."""
    global _shared_down_until
    if time.monotonic() >= _shared_down_until:
        try:
            return cache, _hit_in(cache, key, window)
        except Exception as exc:
            _shared_down_until = time.monotonic() + SHARED_CACHE_RETRY_SECONDS
            logger.warning(
                "throttle: the shared cache is unreachable (%s); counting on this instance",
                type(exc).__name__,
            )
    return _FALLBACK, _hit_in(_FALLBACK, key, window)


def throttle_fallback_reset() -> None:
    """Forget this instance's own counters and the shared cache's failure (tests)."""
    global _shared_down_until
    _shared_down_until = 0.0
    _FALLBACK.clear()


def _remaining(store: BaseCache, key: str, window: float) -> float:
    try:
        started = store.get(f"{key}:start")
    except Exception:
        started = None
    if not isinstance(started, int | float):
        return window
    return max(1.0, started + window - time.time())


def _digest(value: str) -> str:
    # Usernames and addresses are not put into cache keys as they are (length, characters).
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]


def client_address(request: Request) -> str:
    """The peer's address as the server sees it (proxy headers are resolved before this)."""
    return str(request.META.get("REMOTE_ADDR") or "")


class LoginAttemptThrottle(BaseThrottle):
    """Counts every attempt up front; ``login_attempt_succeeded`` takes a good one back."""

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        if request.method != "POST":
            return True
        raw = request.data.get("username") if hasattr(request.data, "get") else None
        address = client_address(request)
        limits = [
            (
                f"auth-fail:addr:{_digest(address)}",
                realtime_settings.AUTH_FAILURES_PER_ADDRESS_PER_MINUTE,
            )
        ]
        username = login_username(raw) if isinstance(raw, str) else ""
        if username:
            # Case-folded too: a case-insensitive authentication backend must not turn
            # "Bob" and "BOB" into fresh counters for bob; the price is that two accounts
            # differing only in case share one.
            name = username.casefold()
            if realtime_settings.AUTH_LOCKOUT_SCOPE == "username_address":
                name = f"{name}\n{address}"
            limits.append(
                (f"auth-fail:user:{_digest(name)}", realtime_settings.AUTH_FAILURES_PER_MINUTE)
            )
        counted = [(key, *_hit(key, LOGIN_WINDOW_SECONDS), limit) for key, limit in limits]
        setattr(request, _ATTEMPT_KEYS, [(store, key) for key, store, _, _ in counted])
        over = [(store, key) for key, store, count, limit in counted if count > limit]
        if over:
            self._wait = max(_remaining(store, key, LOGIN_WINDOW_SECONDS) for store, key in over)
            return False
        return True

    def wait(self) -> float | None:
        return self._wait


def login_attempt_succeeded(request: Request) -> None:
    """A good password: this attempt does not count toward the failure limits."""
    for store, key in getattr(request, _ATTEMPT_KEYS, []):
        # Expired meanwhile, or the cache is down: nothing to take back.
        with contextlib.suppress(Exception):
            store.decr(key)


class UserWriteThrottle(BaseThrottle):
    """Per-user REST writes at the WebSocket frame rate (a fixed window of one burst)."""

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        user = getattr(request, "user", None)
        if request.method in SAFE_METHODS or user is None or not user.is_authenticated:
            return True
        burst = realtime_settings.RATE_LIMIT_BURST
        window = burst / realtime_settings.RATE_LIMIT_FRAMES_PER_SECOND
        now = time.time()
        index = math.floor(now / window)
        _, count = _hit(f"rest-write:{user.pk}:{index}", window * 2)
        if count > burst:
            self._wait = max(1.0, (index + 1) * window - now)
            return False
        return True

    def wait(self) -> float | None:
        return self._wait
