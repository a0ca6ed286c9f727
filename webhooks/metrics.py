"""Webhook counters for Prometheus; health renders ``registry`` with the others."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

registry = CollectorRegistry(auto_describe=False)

_delivered = Counter(
    "realtime_webhook_events_delivered",
    "Webhook events a receiver accepted (2xx), sent by this instance.",
    registry=registry,
)
_failed = Counter(
    "realtime_webhook_failed_attempts",
    "Webhook calls that failed (no answer, or not 2xx), by this instance.",
    registry=registry,
)
_expired = Counter(
    "realtime_webhook_events_expired",
    "Webhook events given up past WEBHOOK_MAX_AGE_SECONDS, by this instance.",
    registry=registry,
)
_pending = Gauge(
    "realtime_webhook_pending",
    "Webhook events owed (all instances), as this instance's sender last counted.",
    registry=registry,
)
_oldest = Gauge(
    "realtime_webhook_oldest_pending_age_seconds",
    "Age of the oldest webhook event owed, as this instance's sender last counted.",
    registry=registry,
)


def events_delivered(count: int) -> None:
    _delivered.inc(count)


def call_failed() -> None:
    _failed.inc()


def events_expired(count: int) -> None:
    _expired.inc(count)


def backlog_observed(*, pending: int, oldest_age_seconds: float) -> None:
    _pending.set(pending)
    _oldest.set(oldest_age_seconds)
