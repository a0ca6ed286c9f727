"""The measurements the benchmark takes, each on a started target (docs/benchmarks.md).

Each function starts nothing and stops nothing: ``run`` owns the processes. Every loop here
is bounded in time.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from bench.e2e.load import ConnectStats, LoadGenerator, PhaseStats
from bench.e2e.probes import CpuMeter, RedisCounters, RedisProbe, rss_kib

QUIET_SECONDS = 0.4
QUIET_LIMIT_SECONDS = 4.0


async def rss_settled(pids: dict[str, int], *, within: float = 3.0) -> dict[str, int]:
    """RSS per process once two samples 0.25 s apart agree within 1 % (or at the deadline)."""
    deadline = time.monotonic() + within
    last = {name: rss_kib(pid) for name, pid in pids.items()}
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = {name: rss_kib(pid) for name, pid in pids.items()}
        if all(abs(now[n] - last[n]) <= 0.01 * last[n] for n in now):
            return now
        last = now
    return last


class Ramp(Protocol):
    """What the memory ramp opens sockets with: one ``LoadGenerator`` or a ``GeneratorPool``."""

    errors: Counter[str]

    @property
    def open_sockets(self) -> int: ...

    async def open_upto(self, target: int) -> ConnectStats: ...


async def memory_ramp(
    gen: Ramp,
    *,
    steps: list[int],
    pids: dict[str, int],
    at_point: Callable[[int], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Open sockets in steps; RSS of each server process at each step, and the connect rate.

    ``at_point(sockets)`` runs once the RSS of each point is read (an introspection of the
    server processes, ``bench.e2e.introspect``)."""
    points: list[dict[str, Any]] = [{"sockets": 0, "rss_kib": await rss_settled(pids)}]
    if at_point is not None:
        await at_point(0)
    connects = []
    for target in steps:
        stats = await gen.open_upto(target)
        connects.append(stats)
        points.append({"sockets": gen.open_sockets, "rss_kib": await rss_settled(pids)})
        if at_point is not None:
            await at_point(gen.open_sockets)
    total_sockets = sum(s.sockets for s in connects)
    total_seconds = sum(s.seconds for s in connects)
    first, last = points[0], points[-1]
    # Sockets are spread evenly over the processes measured.
    by_step = []
    for before, now, stats in zip(points, points[1:], connects, strict=False):
        by_step.append(
            {
                "sockets": now["sockets"],
                "kib_per_socket": _kib_per_socket(first, now),
                "marginal_kib_per_socket": _kib_per_socket(before, now),
                "connects_per_second": stats.per_second,
                "failed": stats.failed,
            }
        )
    per_process = {
        name: (last["rss_kib"][name] - first["rss_kib"][name]) / max(1, last["sockets"] / len(pids))
        for name in pids
    }
    return {
        "points": points,
        "by_step": by_step,
        "connect": {
            "sockets": total_sockets,
            "failed": sum(s.failed for s in connects),
            "per_second": round(total_sockets / total_seconds, 1) if total_seconds else 0.0,
            "per_second_by_step": [s.per_second for s in connects],
            "latency_ms_by_step": [s.latency_ms for s in connects],
            "errors": {k: v for k, v in gen.errors.items() if k.startswith("connect_")},
        },
        "kib_per_socket": round(statistics.fmean(per_process.values()), 1),
        "kib_per_socket_by_process": {k: round(v, 1) for k, v in per_process.items()},
    }


def _kib_per_socket(before: dict[str, Any], now: dict[str, Any]) -> float | None:
    """RSS added between two points per socket added, averaged over the processes."""
    added = now["sockets"] - before["sockets"]
    if added <= 0:
        return None
    grown = [now["rss_kib"][n] - before["rss_kib"][n] for n in now["rss_kib"]]
    return round(statistics.fmean(grown) / (added / len(grown)), 1)


async def phase(
    gen: LoadGenerator,
    run: Any,
    *,
    pids: dict[str, int],
    redis: RedisProbe | None,
    others: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One traffic phase with the CPU of the server processes (and of ``others``: Redis, the
    emulator, this load generator) and the Redis work around it, then a bounded wait until
    every owed delivery is in, so that a backlog never spills into the next phase."""
    cpu = CpuMeter(pids).start()
    other_cpu = CpuMeter(others or {}).start()
    before = redis.counters() if redis else None
    stats: PhaseStats = await run()
    usage = cpu.stop()
    result = stats.as_dict()
    result["cpu_percent"] = usage
    result["other_cpu_percent"] = other_cpu.stop()
    if redis is not None and before is not None:
        delta = redis.counters().minus(before)
        result["redis_calls"] = delta.calls
        result["redis_reads"] = delta.reads
        sent = max(1, stats.acked)
        result["redis_calls_per_frame"] = round(delta.total_calls / sent, 2)
        result["redis_calls_per_delivery"] = round(delta.total_calls / max(1, stats.delivered), 2)
        result["publish_per_frame"] = round(delta.calls.get("publish", 0) / sent, 2)
    settle_started = time.monotonic()
    tally = await gen.settle(within=30)
    result["settle_seconds"] = round(time.monotonic() - settle_started, 2)
    result["lost_after_settle"] = tally.lost
    return result


async def redis_quiet(redis: RedisProbe, *, since: RedisCounters) -> RedisCounters:
    """Counters once nothing has reached Redis for QUIET_SECONDS (bounded): the work a
    connect or disconnect triggers includes what follows it asynchronously."""
    deadline = time.monotonic() + QUIET_LIMIT_SECONDS
    last = redis.counters()
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        now = redis.counters()
        if now.reads != last.reads:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= QUIET_SECONDS:
            break
    return last.minus(since)


async def round_trips(gen: LoadGenerator, redis: RedisProbe, *, trials: int) -> dict[str, Any]:
    """Redis round trips and commands for one connect and one disconnect, alone.

    A round trip is a read event on a Redis client socket (``total_reads_processed``): a
    pipeline sent with one write arrives as one read. The probe's own INFO calls are taken
    out. The most common value over ``trials`` is reported, so a background tick (a health
    check, a heartbeat) landing in one trial does not count.
    """
    connects: list[RedisCounters] = []
    disconnects: list[RedisCounters] = []
    client = next(c for c in gen.clients if c.ws is None)
    for _ in range(trials):
        await redis_quiet(redis, since=redis.counters())  # let the last trial's work finish
        start = redis.counters()
        await gen.connect(clients=[client])
        connects.append(await redis_quiet(redis, since=start))
        start = redis.counters()
        await gen.close([client])
        disconnects.append(await redis_quiet(redis, since=start))

    return {
        "connect": round_trips_summary(connects),
        "disconnect": round_trips_summary(disconnects),
    }


def round_trips_summary(samples: list[RedisCounters]) -> dict[str, Any]:
    """The most common number of reads over the trials, and that trial's commands."""
    reads = Counter(s.reads for s in samples).most_common(1)[0][0]
    typical = next(s for s in samples if s.reads == reads)
    # PING is the layer's probe of its idle links, on a clock, not caused by the connect.
    pings = typical.calls.get("ping", 0)
    return {
        "round_trips": reads - pings,
        "round_trips_with_pings": reads,
        "round_trips_seen": sorted(s.reads for s in samples),
        "commands": typical.calls,
    }
