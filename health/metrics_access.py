"""Who may scrape ``/metrics``, and the scrape's shared registry snapshot (docs/health.md).

Unless ``METRICS_ACCESS=open`` is set explicitly, a scrape needs ``Authorization: Bearer
<METRICS_TOKEN>`` (what Prometheus' ``authorization`` config sends) or a staff user (session,
or a staff user's API token). The registry's cross-instance figures cost Redis round trips
over every instance, so one snapshot serves every scrape for ``METRICS_CACHE_SECONDS``, and
scrapes that arrive while it is taken wait for it instead of taking their own.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

from django.http import HttpRequest
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from accounts.tokens import ExpiringTokenAuthentication
from realtime_project.conf import realtime_settings

ALLOWED = "allowed"
NO_CREDENTIALS = "no_credentials"
FORBIDDEN = "forbidden"


def metrics_access(request: HttpRequest) -> str:
    """``ALLOWED``, ``NO_CREDENTIALS`` (401) or ``FORBIDDEN`` (403). Sync: reads the session."""
    if realtime_settings.METRICS_ACCESS == "open":
        return ALLOWED
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    expected = realtime_settings.METRICS_TOKEN
    if scheme.lower() == "bearer" and expected:
        return ALLOWED if hmac.compare_digest(credential.strip(), expected) else FORBIDDEN
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return ALLOWED if user.is_staff else FORBIDDEN
    if scheme.lower() == "token":
        try:
            found = ExpiringTokenAuthentication().authenticate(Request(request))
        except AuthenticationFailed:
            return FORBIDDEN
        if found is not None:
            return ALLOWED if found[0].is_staff else FORBIDDEN
    return NO_CREDENTIALS if not header else FORBIDDEN


class SnapshotCache:
    """One snapshot shared by every scrape for ``METRICS_CACHE_SECONDS`` (single flight)."""

    def __init__(self) -> None:
        self._value: Any = None
        self._at = 0.0
        self._task: asyncio.Task[Any] | None = None

    def clear(self) -> None:
        self._value, self._at, self._task = None, 0.0, None

    async def get(self, take: Callable[[], Awaitable[Any]]) -> Any:
        ttl = realtime_settings.METRICS_CACHE_SECONDS
        if self._value is not None and time.monotonic() - self._at < ttl:
            return self._value
        loop = asyncio.get_running_loop()
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:
            task = loop.create_task(_awaited(take))
            self._task = task
        value = await asyncio.shield(task)
        if self._task is task:
            self._value, self._at = value, time.monotonic()
        return value


async def _awaited(take: Callable[[], Awaitable[Any]]) -> Any:
    return await take()


snapshot_cache = SnapshotCache()
