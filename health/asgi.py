"""``/api/health`` answered on the event loop, in front of Django. See docs/health.md.

Django runs its middleware chain in a worker thread whenever one middleware is sync-only
(WhiteNoise is), so even an async view would wait for that thread, and a busy instance would
answer its load balancer late. This small ASGI wrapper answers the probe itself, before
Django, and starts the instance's background loops from a clean context (not from inside a
request's thread bridge, whose executor is gone once the request ends).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from health.checks import health_cache

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEALTH_PATHS = frozenset({"/api/health", "/api/health/"})


async def instance_start_quietly() -> None:
    """Start the instance's loops, so an instance with no sockets yet still heartbeats."""
    try:
        from connections.instance import instance_start

        await instance_start()
    except Exception:
        logger.exception("health: starting the instance's loops failed")


async def health_payload() -> tuple[int, dict[str, Any]]:
    await instance_start_quietly()
    report = await health_cache.get()
    return report.http_status, report.body


def health_router(app: ASGIApp) -> ASGIApp:
    """Answer ``GET``/``HEAD /api/health`` here; pass everything else to ``app``."""

    async def router(scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("path") not in HEALTH_PATHS
            or scope.get("method") not in {"GET", "HEAD"}
        ):
            await app(scope, receive, send)
            return
        status, body = await health_payload()
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
