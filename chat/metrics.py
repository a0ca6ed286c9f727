"""What chat counts for Prometheus; health renders ``registry`` with the others.

Design note: docs/health.md ("Delivery and healing metrics"). Healing's own gauge and
counter are defined at the bottom of ``chat/healing.py``, beside what they count, in this
registry.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable
from itertools import accumulate
from typing import Final

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

registry = CollectorRegistry(auto_describe=False)

_frame_errors = Counter(
    "realtime_frame_errors",
    "Client frames answered with an error frame, by error code.",
    ["code"],
    registry=registry,
)


def frame_error(code: str) -> None:
    _frame_errors.labels(code=str(code)).inc()


# The event kinds a socket is sent; a label per kind keeps the series few and fixed.
DELIVERY_KINDS: Final = ("message", "read", "member", "typing", "presence")
# From a frame handed over at once (1 ms) to one healed after an outage (10 s; above: +Inf).
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

LATENCY_HELP: Final = (
    "Seconds from an event's emission (after its commit) to its frame handed to a socket's "
    "transport on this instance, by event kind. The two ends are read from the wall clocks of "
    "the emitting and the delivering host: across hosts it includes their clock offset. "
    "Events delivered late by healing or a gap fill count from the time they were logged; "
    "a resume's replay is not counted."
)


class _Series:
    """One kind's histogram: a count per bucket (not cumulative) and the sum of latencies."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DELIVERY_LATENCY_BUCKETS_SECONDS) + 1)  # the last is +Inf
        self.total = 0.0


class DeliveryLatency(Collector):
    """The delivery latency histogram, counted without a lock.

    prometheus_client's ``Histogram.observe`` takes two locks and walks the buckets: ~5x the
    cost of this one (docs/benchmarks.md), paid per socket per event. Observations happen on
    the event loop's thread only, so plain integers suffice; the scrape (an async view) reads
    them there too, and were it ever read from another thread, a bucket one observation
    ahead of the sum is nothing a quantile would notice.
    """

    def __init__(self) -> None:
        self.series: dict[str, _Series] = {kind: _Series() for kind in DELIVERY_KINDS}

    def observe(self, kind: str, emitted_at: float) -> None:
        series = self.series.get(kind)
        if series is None:
            return
        latency = time.time() - emitted_at
        if latency < 0.0:
            # A sender's clock ahead of ours must not make a negative latency: it counts as 0.
            latency = 0.0
        series.counts[bisect_left(DELIVERY_LATENCY_BUCKETS_SECONDS, latency)] += 1
        series.total += latency

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(
            "realtime_delivery_latency_seconds", LATENCY_HELP, labels=["kind"]
        )
        bounds = [repr(bound) for bound in DELIVERY_LATENCY_BUCKETS_SECONDS] + ["+Inf"]
        for kind, series in self.series.items():
            cumulative = list(accumulate(series.counts))
            family.add_metric([kind], list(zip(bounds, cumulative, strict=True)), series.total)
        yield family


delivery_latency = DeliveryLatency()
registry.register(delivery_latency)
# The bound method: a delivery calls it without looking up the collector first.
delivery_observe: Final = delivery_latency.observe


# A transaction that writes messages holds one (alone) up to MESSAGE_BATCH_MAX of them.
MESSAGE_BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128)


class MessageBatches(Collector):
    """Transactions that wrote messages from sockets, by how many each held (group commit,
    chat/message_writes.py), and the batches rolled back to be written one by one.

    Counted on the event loop's thread only, without a lock, as ``DeliveryLatency``: a
    message alone is observed too, and a lock per message is what that class avoids.
    """

    def __init__(self) -> None:
        self.counts = [0] * (len(MESSAGE_BATCH_BUCKETS) + 1)  # the last is +Inf
        self.messages = 0
        self.splits = 0

    def observe(self, size: int) -> None:
        self.counts[bisect_left(MESSAGE_BATCH_BUCKETS, size)] += 1
        self.messages += size

    def split(self) -> None:
        self.splits += 1

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(
            "realtime_message_batch_size",
            "Messages per transaction written on the event loop's connections (1: alone).",
        )
        bounds = [str(bound) for bound in MESSAGE_BATCH_BUCKETS] + ["+Inf"]
        family.add_metric(
            [], list(zip(bounds, accumulate(self.counts), strict=True)), self.messages
        )
        yield family
        yield CounterMetricFamily(
            "realtime_message_batches_split",
            "Batches of messages rolled back by an error and written one by one instead.",
            value=self.splits,
        )


message_batches = MessageBatches()
registry.register(message_batches)
