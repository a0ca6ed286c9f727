"""Prometheus metrics at ``/metrics``. See docs/operations.md.

The layer and the registry already count what they do; a collector reads their counters at
scrape time instead of keeping a second copy. What only a socket's owners see (sockets opened,
closed and refused; bad frames) is counted beside the code that sees it, in the app's own
registry (``connections.metrics.registry``, ``chat.metrics.registry``), rendered here with
ours: health only reads, and no app imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from chat import metrics as chat_metrics
from connections import metrics as connections_metrics
from connections.status import layer_view, registry_view
from presence.services import presence_counters as presence_counters_read
from webhooks import metrics as webhooks_metrics

logger = logging.getLogger(__name__)

PREFIX = "realtime"

registry = CollectorRegistry(auto_describe=False)
ProcessCollector(registry=registry)

# The layer's counters: name in layer.counters() -> (metric, help, extra labels). Counters the
# layer adds later are still exported, as gauges named after them.
_LAYER_COUNTERS: dict[str, tuple[str, str, dict[str, str]]] = {
    "published": ("events_published", "Envelopes published to Redis.", {}),
    "delivered_local": (
        "events_delivered",
        "Events delivered to sockets, by where they came from.",
        {"path": "local"},
    ),
    "delivered_remote": (
        "events_delivered",
        "Events delivered to sockets, by where they came from.",
        {"path": "remote"},
    ),
    "echoes_dropped": ("echoes_dropped", "Own publications received back and dropped.", {}),
    "duplicates_dropped": (
        "duplicates_dropped",
        "Events dropped because the socket already had that event id.",
        {},
    ),
    "queue_overflows": ("queue_overflows", "Messages dropped by a full per-socket queue.", {}),
    "redis_errors": ("redis_errors", "Redis calls of the channel layer that failed.", {}),
    "publish_failures": ("publish_failures", "Envelopes that could not be published.", {}),
    "degraded_seconds": ("degraded_seconds", "Time this instance spent degraded.", {}),
    "slot_map_refreshes": (
        "slot_map_refreshes",
        "Times the layer read a Redis Cluster's slot map again (a resharding or failover).",
        {},
    ),
}


@dataclass
class ScrapeSnapshot:
    """What needs a Redis round trip, gathered by the async view before the sync collection."""

    stats: Mapping[str, Any] | None = None
    presence: Mapping[str, float] = field(default_factory=dict)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


class RealtimeCollector(Collector):
    """Reads the layer, the registry and presence at scrape time."""

    def __init__(self) -> None:
        self.snapshot = ScrapeSnapshot()

    def collect(self) -> Iterable[Metric]:
        yield from self._connections()
        yield from self._layer()
        yield from self._presence()

    def _connections(self) -> Iterator[Metric]:
        local = GaugeMetricFamily(
            f"{PREFIX}_connections", "Live WebSockets on this instance.", labels=[]
        )
        local.add_metric([], float(registry_view().local_connection_count()))
        yield local
        stats = self.snapshot.stats
        if not stats:
            return
        total = GaugeMetricFamily(
            f"{PREFIX}_connections_global", "Live WebSockets on every instance (registry)."
        )
        total.add_metric([], float(stats.get("total_connections", 0)))
        yield total
        users = GaugeMetricFamily(
            f"{PREFIX}_users_online", "Distinct users with a live socket (registry)."
        )
        users.add_metric([], float(stats.get("unique_users", 0)))
        yield users
        per = GaugeMetricFamily(
            f"{PREFIX}_instance_connections",
            "Live WebSockets per instance (registry).",
            labels=["instance_id"],
        )
        for row in stats.get("instances", []) or []:
            per.add_metric([str(row.get("instance_id"))], float(row.get("connections", 0)))
        yield per

    def _layer(self) -> Iterator[Metric]:
        layer = layer_view()
        status = layer.status if layer is not None else "local"
        state = GaugeMetricFamily(
            f"{PREFIX}_layer_status",
            "1 for the channel layer's current state (local, healthy, degraded).",
            labels=["status"],
        )
        for name in ("local", "healthy", "degraded"):
            state.add_metric([name], 1.0 if status == name else 0.0)
        yield state
        if layer is None:
            return
        try:
            counters: Mapping[str, Any] = layer.counters()
        except Exception:
            logger.exception("metrics: reading the layer's counters failed")
            return
        families: dict[str, CounterMetricFamily] = {}
        for key, (name, help_text, labels) in _LAYER_COUNTERS.items():
            value = _number(counters.get(key))
            if value is None:
                continue
            family = families.get(name)
            if family is None:
                family = CounterMetricFamily(
                    f"{PREFIX}_{name}", help_text, labels=list(labels) or None
                )
                families[name] = family
            family.add_metric(list(labels.values()), value)
        yield from families.values()
        for key, raw in sorted(counters.items()):
            value = _number(raw)
            if key in _LAYER_COUNTERS or value is None:
                continue
            # Gauges such as subscriptions and queue depths, and anything added later.
            gauge = GaugeMetricFamily(f"{PREFIX}_layer_{_safe(key)}", f"Channel layer: {key}.")
            gauge.add_metric([], value)
            yield gauge

    def _presence(self) -> Iterator[Metric]:
        for key, value in sorted(self.snapshot.presence.items()):
            family = GaugeMetricFamily(f"{PREFIX}_presence_{_safe(key)}", f"Presence: {key}.")
            family.add_metric([], float(value))
            yield family


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name).lower()


collector = RealtimeCollector()
registry.register(collector)


class _ForwardingCollector(Collector):
    """Another app's own registry, rendered with ours (its counters live beside its code)."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        return self._source.collect()


registry.register(_ForwardingCollector(connections_metrics.registry))
registry.register(_ForwardingCollector(chat_metrics.registry))
registry.register(_ForwardingCollector(webhooks_metrics.registry))


def presence_counters() -> dict[str, float]:
    """Presence's counters (writes, retries, pending)."""
    try:
        raw = presence_counters_read()
    except Exception:
        logger.exception("metrics: reading presence counters failed")
        return {}
    return {str(k): float(v) for k, v in dict(raw).items() if _number(v) is not None}
