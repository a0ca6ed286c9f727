"""Counters read from outside the processes measured: /proc for CPU and RSS, Redis INFO.

Nothing here changes the system under test: CPU is ``utime + stime`` from /proc/<pid>/stat,
memory is ``VmRSS`` from /proc/<pid>/status, and Redis work is the delta of ``INFO
commandstats`` (calls per command) and ``INFO stats`` (``total_reads_processed``: one per
read event on a client socket, which is how round trips are counted, see docs/benchmarks.md).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import redis

from scripts.procs import process_children

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat(5), counted from after the command name.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """The process's resident memory, with its children's (an instance of ``PROCESSES`` > 1
    is a supervisor and its Daphne processes)."""
    total = 0
    for one in [pid, *process_children(pid)]:
        with open(f"/proc/{one}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


@dataclass
class CpuMeter:
    """CPU use of some processes between ``start()`` and ``stop()``, in % of one core."""

    pids: dict[str, int]
    _cpu: dict[str, float] = field(default_factory=dict)
    _wall: float = 0.0

    def start(self) -> CpuMeter:
        self._cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._wall = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        wall = max(1e-9, time.monotonic() - self._wall)
        return {
            name: round(100 * (cpu_seconds(pid) - self._cpu[name]) / wall, 1)
            for name, pid in self.pids.items()
        }


@dataclass(frozen=True)
class RedisCounters:
    calls: dict[str, int]  # per command, lower case ("publish", "evalsha", ...)
    reads: int  # read events on client sockets: one per round trip (a pipeline is one)
    samples: int = 0  # INFO calls the probe had made when this was read, this one included

    def minus(self, before: RedisCounters) -> RedisCounters:
        """What others did in between: each later sample cost one read and one INFO call."""
        probe = self.samples - before.samples
        calls = {name: count - before.calls.get(name, 0) for name, count in self.calls.items()}
        calls["info"] = calls.get("info", 0) - probe
        return RedisCounters(
            calls={name: count for name, count in calls.items() if count},
            reads=self.reads - before.reads - probe,
        )

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


class RedisProbe:
    """Reads counters over its own connection; ``minus`` takes its own INFO calls out."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.samples = 0

    def counters(self) -> RedisCounters:
        # One INFO for both sections, so a sample costs exactly one read.
        info = self.client.execute_command("INFO", "commandstats", "stats")
        self.samples += 1
        calls = {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in info.items()
            if name.startswith("cmdstat_")
        }
        return RedisCounters(
            calls=calls, reads=int(info["total_reads_processed"]), samples=self.samples
        )

    def pid(self) -> int:
        return int(self.client.info("server")["process_id"])

    def close(self) -> None:
        self.client.close()
