"""REST throttles on the shared cache, so they hold across instances (docs/auth.md).

Django's cache is Redis (``RedisCache`` on ``REDIS_URL``) when the instances share one, and
this process's memory in the embedded default. Each limit is a counter bumped atomically
(``INCR``) before the request runs, never a read-then-write of a history list, so parallel
requests on several instances cannot slip past it together.

- ``LoginAttemptThrottle`` on ``POST /api/auth/token``: at most ``AUTH_FAILURES_PER_MINUTE``
  failed attempts per username, and ``AUTH_FAILURES_PER_ADDRESS_PER_MINUTE`` per client
  address, within a minute of the first; a successful attempt is not counted.
- ``UserWriteThrottle`` on every REST write (POST, PUT, PATCH, DELETE): the WebSocket frame
  rate per user, ``RATE_LIMIT_BURST`` requests per ``RATE_LIMIT_BURST /
  RATE_LIMIT_FRAMES_PER_SECOND`` seconds.

Past a limit DRF answers ``429`` with ``Retry-After``. When the cache cannot be reached the
request is let through (and logged): Redis being down must not lock every user out.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from typing import Any

from django.core.cache import cache
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from realtime_project.conf import realtime_settings

logger = logging.getLogger(__name__)

LOGIN_WINDOW_SECONDS = 60.0
_ATTEMPT_KEYS = "_login_attempt_keys"


def _hit(key: str, window: float) -> int:
    """Count one hit on ``key``; the count lives ``window`` seconds from its first hit."""
    timeout = max(1, math.ceil(window))
    if cache.add(key, 1, timeout):
        cache.add(f"{key}:start", time.time(), timeout)
        return 1
    try:
        count = int(cache.incr(key))
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout)
        cache.add(f"{key}:start", time.time(), timeout)
        return 1
    if count == 1:
        # INCR recreated a key that had just expired: it must not live forever.
        cache.touch(key, timeout)
    return count


def _remaining(key: str, window: float) -> float:
    started = cache.get(f"{key}:start")
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
        username = request.data.get("username") if hasattr(request.data, "get") else None
        limits = [
            (
                f"auth-fail:addr:{_digest(client_address(request))}",
                realtime_settings.AUTH_FAILURES_PER_ADDRESS_PER_MINUTE,
            )
        ]
        if isinstance(username, str) and username:
            limits.append(
                (
                    f"auth-fail:user:{_digest(username.lower())}",
                    realtime_settings.AUTH_FAILURES_PER_MINUTE,
                )
            )
        try:
            counted = [(key, _hit(key, LOGIN_WINDOW_SECONDS), limit) for key, limit in limits]
        except Exception:
            logger.warning("login throttle: the cache is unreachable; not throttling")
            return True
        setattr(request, _ATTEMPT_KEYS, [key for key, _, _ in counted])
        over = [key for key, count, limit in counted if count > limit]
        if over:
            self._wait = max(_remaining(key, LOGIN_WINDOW_SECONDS) for key in over)
            return False
        return True

    def wait(self) -> float | None:
        return self._wait


def login_attempt_succeeded(request: Request) -> None:
    """A good password: this attempt does not count toward the failure limits."""
    for key in getattr(request, _ATTEMPT_KEYS, []):
        # Expired meanwhile, or the cache is down: nothing to take back.
        with contextlib.suppress(Exception):
            cache.decr(key)


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
        try:
            count = _hit(f"rest-write:{user.pk}:{index}", window * 2)
        except Exception:
            logger.warning("write throttle: the cache is unreachable; not throttling")
            return True
        if count > burst:
            self._wait = max(1.0, (index + 1) * window - now)
            return False
        return True

    def wait(self) -> float | None:
        return self._wait
