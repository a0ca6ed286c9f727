"""``/api/health`` and ``/metrics``. See docs/health.md.

Both are async views: under Daphne they run on the event loop and never queue behind the
thread pool that sync views share, so a busy instance still answers its load balancer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connections.status import registry_view
from health import metrics
from health.asgi import health_payload
from health.metrics_access import ALLOWED, NO_CREDENTIALS, metrics_access, snapshot_cache
from realtime_project.conf import realtime_settings

logger = logging.getLogger(__name__)


@never_cache
@require_GET
async def health_view(request: HttpRequest) -> HttpResponse:
    """``health.asgi.health_router``'s answer, with the checks' details for those who may
    scrape ``/metrics`` (a staff user, the ``METRICS_TOKEN`` bearer). Anyone else, bad
    credentials included, gets the public body with the same status: never a 401 or 403,
    which a load balancer would read as a dead instance."""
    access = await sync_to_async(metrics_access)(request)
    status, body = await health_payload(detailed=access == ALLOWED)
    response = JsonResponse(body, status=status)
    if body.get("draining"):
        # Expected while draining: not an error for Django's request log at every probe.
        response._has_been_logged = True  # type: ignore[attr-defined]
    return response


async def _snapshot() -> metrics.ScrapeSnapshot:
    timeout = realtime_settings.HEALTH_TIMEOUT_SECONDS
    stats: Any = None
    try:
        async with asyncio.timeout(timeout):
            stats = await registry_view().stats()
    except Exception:
        # Redis down: the scrape still answers with this instance's own numbers.
        stats = None
    return metrics.ScrapeSnapshot(stats=stats, presence=metrics.presence_counters())


@never_cache
@require_GET
async def metrics_view(request: HttpRequest) -> HttpResponse:
    access = await sync_to_async(metrics_access)(request)
    if access != ALLOWED:
        # 401 names the scheme a scraper should use; 403 for wrong or non-staff credentials.
        status = 401 if access == NO_CREDENTIALS else 403
        response = JsonResponse({"detail": "METRICS_TOKEN or a staff user only."}, status=status)
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    metrics.collector.snapshot = await snapshot_cache.get(_snapshot)
    return HttpResponse(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)
