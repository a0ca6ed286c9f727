"""What a live connection's life counts for Prometheus; health renders ``registry`` with the
others (docs/health.md).

Sockets are opened and closed by chat's live-socket core and refused by it or by accounts'
authentication, all of them below health: the counters live here, beside the connections
they count, and health only reads this registry at scrape time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

PREFIX = "realtime"

registry = CollectorRegistry(auto_describe=False)

_opened = Counter(
    f"{PREFIX}_connections_opened", "WebSockets accepted on this instance.", registry=registry
)
_closed = Counter(
    f"{PREFIX}_connections_closed",
    "WebSockets closed on this instance, by close code.",
    ["code"],
    registry=registry,
)
_rejected = Counter(
    f"{PREFIX}_connections_rejected",
    "WebSockets refused (4401, 4403, 4429 ...), by close code.",
    ["code"],
    registry=registry,
)


def connection_opened() -> None:
    _opened.inc()


def connection_closed(code: int | str | None) -> None:
    _closed.labels(code=str(code if code is not None else "none")).inc()


def connection_rejected(close_code: int | str) -> None:
    _rejected.labels(code=str(close_code)).inc()
