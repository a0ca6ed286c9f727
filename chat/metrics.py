"""What chat counts for Prometheus; health renders ``registry`` with the others.

Design note: docs/health.md ("Delivery and healing metrics"). Healing's own gauge and
counter are defined at the bottom of ``chat/healing.py``, beside what they count, in this
registry.
"""

from __future__ import annotations

import time
from typing import Final

from prometheus_client import CollectorRegistry, Histogram

registry = CollectorRegistry(auto_describe=False)

# The event kinds a socket is sent; a label per kind keeps the series few and fixed.
DELIVERY_KINDS: Final = ("message", "read", "member", "typing", "presence")
# From a frame handed over at once (1 ms) to one healed after an outage (10 s and more).
DELIVERY_LATENCY_BUCKETS_SECONDS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

_latency = Histogram(
    "realtime_delivery_latency_seconds",
    "Seconds from an event's emission (after its commit) to its frame handed to a socket's "
    "transport on this instance, by event kind. The two ends are read from the wall clocks of "
    "the emitting and the delivering host: across hosts it includes their clock offset. "
    "Events delivered late by healing or a gap fill count from the time they were logged; "
    "a resume's replay is not counted.",
    ["kind"],
    buckets=DELIVERY_LATENCY_BUCKETS_SECONDS,
    registry=registry,
)
# Bound once: an observation is a dict lookup and the histogram's own update, nothing more.
_latency_by_kind: Final = {kind: _latency.labels(kind=kind) for kind in DELIVERY_KINDS}


def delivery_observe(kind: str, emitted_at: float) -> None:
    """Count one frame of ``kind`` handed to a transport, emitted at ``emitted_at`` (epoch)."""
    child = _latency_by_kind.get(kind)
    if child is not None:
        # A sender's clock ahead of ours must not make a negative latency: it counts as 0.
        child.observe(max(0.0, time.time() - emitted_at))
