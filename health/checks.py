"""The checks behind ``/api/health``. See docs/health.md.

Each check answers within ``REALTIME["HEALTH_TIMEOUT_SECONDS"]`` whatever its dependency does
(a hung Redis or Firestore must not hang the load balancer's probe), the three run
concurrently, and one evaluation is shared by every request for
``REALTIME["HEALTH_CACHE_SECONDS"]`` so a probe every second costs next to nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from django.db import connection, connections

from connections.lifecycle import drain_is_active
from connections.status import layer_view, registry_view
from connections.topology import get_topology
from presence.services import presence_is_behind, presence_store_check
from realtime_project.conf import realtime_settings

logger = logging.getLogger(__name__)

CheckStatus = Literal["up", "down", "behind", "disabled"]
OverallStatus = Literal["healthy", "degraded", "unhealthy"]


@dataclass(frozen=True)
class HealthReport:
    status: OverallStatus
    body: dict[str, Any]

    @property
    def http_status(self) -> int:
        return 503 if self.status == "unhealthy" else 200


def _result(status: CheckStatus, started: float, **extra: Any) -> dict[str, Any]:
    return {"status": status, "latency_ms": round((time.monotonic() - started) * 1000, 2), **extra}


async def _bounded(probe: Awaitable[bool], limit_seconds: float) -> bool:
    """``probe``'s answer, or False once ``limit_seconds`` passed or it raised."""
    try:
        async with asyncio.timeout(limit_seconds):
            return bool(await probe)
    except Exception:  # a probe that raises is a dependency that is down
        return False


async def check_redis(*, timeout_seconds: float) -> dict[str, Any]:
    """A real round trip to every node of the topology plus the layer's own view of Redis.

    A round trip alone would miss a subscriber connection that died silently; the layer's
    status and its own probe (``layer.check``) cover that. ``nodes`` counts off each node the
    shared state depends on (every master of a cluster) and whether it answered; ``slots`` is
    down while part of a cluster's slots has no reachable master.
    """
    topology = get_topology()
    if not topology.enabled:
        return {"status": "disabled"}
    started = time.monotonic()
    layer = layer_view()
    registry = registry_view()

    async def bounded_nodes() -> dict[str, bool]:
        try:
            async with asyncio.timeout(timeout_seconds):
                return await registry.check_nodes(timeout_seconds)
        except Exception:
            return {topology.describe(): False}

    probes: list[Awaitable[bool]] = [layer.check(timeout_seconds)] if layer is not None else []
    node_answers, answers = await asyncio.gather(
        bounded_nodes(), asyncio.gather(*(_bounded(p, timeout_seconds) for p in probes))
    )
    layer_status = layer.status if layer is not None else None
    up = all(node_answers.values()) and all(answers) and layer_status != "degraded"
    # Nodes by position, never by address: the probe is public and reveals no configuration.
    extra: dict[str, Any] = {
        "topology": topology.mode,
        "nodes": {
            (name if name == "slots" else f"node-{index}"): "up" if ok else "down"
            for index, (name, ok) in enumerate(sorted(node_answers.items()), start=1)
        },
    }
    if layer_status is not None:
        extra["layer"] = layer_status
    return _result("up" if up else "down", started, **extra)


async def check_firestore(*, timeout_seconds: float) -> dict[str, Any]:
    """A cheap read of the presence store; ``behind`` while presence writes wait to be retried."""
    if not realtime_settings.FIRESTORE_PROJECT_ID:
        return {"status": "disabled"}
    started = time.monotonic()
    if not await _bounded(presence_store_check(timeout_seconds), timeout_seconds):
        return _result("down", started)
    behind = bool(presence_is_behind())
    return _result("behind" if behind else "up", started)


# The database is probed from a thread of its own, so the probe never queues behind the sync
# views' thread and a hung database blocks only this thread (never more than one probe).
_db_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="health-db")
_db_pending: concurrent.futures.Future[None] | None = None


def database_probe_close() -> None:
    """Close the probe thread's own connection (before a test database is dropped)."""
    _db_executor.submit(connections.close_all).result(timeout=10)


def _db_round_trip() -> None:
    connection.close_if_unusable_or_obsolete()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def check_database(*, timeout_seconds: float) -> dict[str, Any]:
    global _db_pending
    started = time.monotonic()
    if _db_pending is not None and not _db_pending.done():
        return _result("down", started, detail="previous probe still waiting")
    future = _db_executor.submit(_db_round_trip)
    _db_pending = future
    try:
        async with asyncio.timeout(timeout_seconds):
            await asyncio.wrap_future(future)
    except Exception as exc:
        logger.warning("health: database check failed: %s", type(exc).__name__)
        return _result("down", started)
    return _result("up", started)


def _overall(checks: dict[str, dict[str, Any]]) -> OverallStatus:
    if checks["database"]["status"] == "down":
        return "unhealthy"
    if any(c["status"] in {"down", "behind"} for c in checks.values()):
        return "degraded"
    return "healthy"


def _connection_count() -> int:
    return registry_view().local_connection_count()


async def health_evaluate() -> HealthReport:
    """Run every check now (concurrently, each bounded) and judge the instance."""
    timeout = realtime_settings.HEALTH_TIMEOUT_SECONDS
    redis, firestore, database = await asyncio.gather(
        check_redis(timeout_seconds=timeout),
        check_firestore(timeout_seconds=timeout),
        check_database(timeout_seconds=timeout),
    )
    checks = {"redis": redis, "firestore": firestore, "database": database}
    status = _overall(checks)
    body: dict[str, Any] = {
        "status": status,
        "instance_id": realtime_settings.INSTANCE_ID,
        "checks": checks,
        "connections": _connection_count(),
    }
    return HealthReport(status=status, body=body)


# What every caller sees of a check: enough for a load balancer or a status page to judge the
# instance. The topology, per-node answers and the layer's state are for operators.
PUBLIC_CHECK_FIELDS = frozenset({"status", "latency_ms"})


def health_public_body(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as an anonymous caller sees it: the contract's keys, each check trimmed."""
    checks = {
        name: {k: v for k, v in check.items() if k in PUBLIC_CHECK_FIELDS}
        for name, check in body.get("checks", {}).items()
    }
    return {**body, "checks": checks}


def _draining_report(previous: HealthReport | None) -> HealthReport:
    body: dict[str, Any] = {
        "status": "unhealthy",
        "draining": True,
        "instance_id": realtime_settings.INSTANCE_ID,
        "checks": dict(previous.body["checks"]) if previous else {},
        "connections": _connection_count(),
    }
    return HealthReport(status="unhealthy", body=body)


class HealthCache:
    """One evaluation shared by all callers for ``HEALTH_CACHE_SECONDS``.

    Callers that arrive while an evaluation runs wait for it instead of starting their own.
    The in-flight task belongs to one event loop; another loop (tests) starts its own.
    """

    def __init__(
        self, evaluate: Callable[[], Coroutine[Any, Any, HealthReport]] = health_evaluate
    ) -> None:
        self._evaluate = evaluate
        self._report: HealthReport | None = None
        self._at = 0.0
        self._task: asyncio.Task[HealthReport] | None = None

    def clear(self) -> None:
        self._report = None
        self._at = 0.0
        self._task = None

    async def get(self) -> HealthReport:
        if drain_is_active():
            # Draining answers at once: the load balancer must stop sending new sockets now.
            return _draining_report(self._report)
        ttl = realtime_settings.HEALTH_CACHE_SECONDS
        if self._report is not None and time.monotonic() - self._at < ttl:
            return self._report
        loop = asyncio.get_running_loop()
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:
            task = loop.create_task(self._evaluate())
            self._task = task
        report = await asyncio.shield(task)
        if self._task is task and self._report is not report:
            previous = self._report.status if self._report is not None else None
            if previous is not None and previous != report.status:
                logger.warning(
                    "health status changed",
                    extra={
                        "fields": {"event": "health_status", "from": previous, "to": report.status}
                    },
                )
            self._report, self._at = report, time.monotonic()
        return report


health_cache = HealthCache()
