"""``/api/health`` answered on the event loop, in front of Django. See docs/health.md.

Django runs its middleware chain in a worker thread whenever one middleware is sync-only
(WhiteNoise is), so even an async view would wait for that thread, and a busy instance would
answer its load balancer late. This small ASGI wrapper answers the probe itself, before
Django, with the body anyone may see (``health_public_body``). A request that carries
credentials (an ``Authorization`` header or a cookie) goes on to Django's view, which shows
the checks' details to a staff user or the ``METRICS_TOKEN`` bearer. It only reads; the
instance's loops are started by ``connections.lifecycle``.
"""

from __future__ import annotations

import json
from typing import Any

from health.checks import health_cache, health_public_body
from realtime_project.conf import realtime_settings
from realtime_project.runtime.asgi_types import ASGIApp, Receive, Scope, Send

HEALTH_PATHS = frozenset({"/api/health", "/api/health/"})


async def health_payload(*, detailed: bool) -> tuple[int, dict[str, Any]]:
    report = await health_cache.get()
    return report.http_status, report.body if detailed else health_public_body(report.body)


def _has_credentials(scope: Scope) -> bool:
    return any(name in {b"authorization", b"cookie"} for name, _ in scope.get("headers", []))


def health_router(app: ASGIApp) -> ASGIApp:
    """Answer ``GET``/``HEAD /api/health`` here; pass everything else to ``app``."""

    async def router(scope: Scope, receive: Receive, send: Send) -> None:
        open_access = realtime_settings.METRICS_ACCESS == "open"
        if (
            scope["type"] != "http"
            or scope.get("path") not in HEALTH_PATHS
            or scope.get("method") not in {"GET", "HEAD"}
            or (_has_credentials(scope) and not open_access)
        ):
            await app(scope, receive, send)
            return
        status, body = await health_payload(detailed=open_access)
        content = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else content}
        )

    return router
