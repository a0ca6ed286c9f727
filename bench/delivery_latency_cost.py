"""What timing a delivery costs the hot path (docs/benchmarks.md, "Delivery latency histogram").

Every frame handed to a socket is observed once (``chat.metrics.delivery_observe``), so its
price is paid per socket per event. Compared, in one run and interleaved so the machine's
load hits them alike: an empty call (the floor), the observation, the ``time.time()`` the
emitting side adds per event, and parsing the frame's ISO ``ts`` (what the observation would
cost without the emission time carried beside the frame), and prometheus_client's own
``Histogram.observe`` doing the same (what ``chat.metrics.DeliveryLatency`` replaces). Also
checks that a million observations leave no memory behind.

    .venv/bin/python -m bench.delivery_latency_cost [--calls 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Histogram

from chat.metrics import DELIVERY_KINDS, DELIVERY_LATENCY_BUCKETS_SECONDS, delivery_observe

# The stock histogram, as the first version of this metric used it: the comparison.
_stock = Histogram(
    "stock",
    "stock",
    ["kind"],
    buckets=DELIVERY_LATENCY_BUCKETS_SECONDS,
    registry=CollectorRegistry(),
)
_stock_by_kind = {kind: _stock.labels(kind=kind) for kind in DELIVERY_KINDS}


def _empty(kind: str, emitted_at: float) -> None:
    return None


def _stock_observe(kind: str, emitted_at: float) -> None:
    child = _stock_by_kind.get(kind)
    if child is not None:
        child.observe(max(0.0, time.time() - emitted_at))


def _parse_ts(kind: str, ts: str) -> None:
    delivery_observe(kind, datetime.fromisoformat(ts).timestamp())


def _per_call_ns(call: Callable[[str, object], None], arg: object, calls: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(calls):
        call("message", arg)
    return (time.perf_counter_ns() - started) / calls


def _emit_stamp(kind: str, arg: object) -> None:
    time.time()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    now = time.time()
    ts = datetime.now(UTC).isoformat()
    cases: dict[str, tuple[Callable[[str, object], None], object]] = {
        "empty_call": (_empty, now),  # type: ignore[dict-item]
        "observe": (delivery_observe, now),  # type: ignore[dict-item]
        "stock_histogram_observe": (_stock_observe, now),  # type: ignore[dict-item]
        "emit_time_stamp": (_emit_stamp, now),
        "observe_parsing_ts": (_parse_ts, ts),  # type: ignore[dict-item]
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (call, arg) in cases.items():
            samples[name].append(_per_call_ns(call, arg, args.calls))
    tracemalloc.start()
    delivery_observe("message", now)  # anything created once, before the baseline
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(1_000_000):
        delivery_observe("message", now)
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(
        json.dumps(
            {
                "ns_per_call_median": {k: round(v, 1) for k, v in medians.items()},
                "observe_minus_empty_ns": round(medians["observe"] - medians["empty_call"], 1),
                "retained_bytes_after_1M_observations": after - before,
                "peak_bytes_during": peak - before,
                "calls": args.calls,
                "rounds": args.rounds,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
