"""An instance's own CPU time per connect and per ping, or per typing delivery, under the event
loop EVENT_LOOP names.

Run: PYTHONPATH=clients/python .venv/bin/python -m bench.e2e.cpu_per_op [--sockets 1000]
         [--database-url postgres://...] [--profile FILE] [--typing SECONDS]
     (EVENT_LOOP=asyncio|uvloop in the environment; PY_SPY_ARGS=--gil for the loop's own time)

CPU seconds (user + system, every thread of the process) are counted where wall times are
not: on a machine shared with other work a connect's wall time is mostly waiting for a CPU,
and its CPU time is what the instance spends on it. ``--sockets`` clients connect to one
instance, ``--concurrency`` handshakes at a time (few enough that none is shed), then send
four pings each, 50 at a time; one line of JSON per run.

``--typing SECONDS`` measures the typing path instead: the sockets, in conversations of two,
alternate between the two instances (every delivery crosses the layer), each keeps one
``typing`` frame in flight for a warm-up and then for SECONDS, and the figure is the two
instances' CPU seconds over the deliveries of that phase. A delivery is the whole typing
path: the sender's frame parsed, validated, rate-checked, published and acknowledged on one
instance, received, deduplicated and sent on the other. ``--profile`` then samples the
second instance through the measured phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.e2e.load import LoadGenerator, accounts_assign
from bench.e2e.probes import cpu_seconds
from bench.e2e.targets import bench_cluster, users_seed

PINGS_PER_SOCKET = 4
PINGS_AT_ONCE = 50
# Full-speed typing before the measured phase: joins, caches and the allocator settled.
TYPING_WARM_UP_SECONDS = 3.0


def _profile(out: Path | None, pid: int) -> subprocess.Popen[bytes] | None:
    """``--profile FILE``: py-spy samples the instance through the connects (collapsed stacks;
    ``python -m bench.e2e.profiles`` summarizes a folder of them)."""
    if out is None:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "400",
            "--nonblocking",
            *os.environ.get("PY_SPY_ARGS", "").split(),
            "--format",
            "raw",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def cpu_per_op(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cluster = bench_cluster(
        layer="realtime", state_dir=workdir, instances=2, database_url=args.database_url
    )
    try:
        seeded = users_seed(cluster, users=args.sockets, size=2)
        instance = cluster.instances[1]
        gen = LoadGenerator(accounts_assign(seeded, [instance.ws_url, instance.ws_url]))
        await asyncio.sleep(2)  # the instance's start-up work done
        spy = _profile(args.profile, instance.pid)
        before = cpu_seconds(instance.pid)
        connects = await gen.connect(concurrency=args.concurrency)
        await asyncio.sleep(1)  # presence and registry writes that follow the connects
        connected = cpu_seconds(instance.pid)
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
            spy.wait()
        clients = [c for c in gen.clients if c.ws is not None]
        gate = asyncio.Semaphore(PINGS_AT_ONCE)

        async def ping(index: int) -> None:
            async with gate:
                await gen.request(clients[index % len(clients)], {"type": "ping"})

        pings = PINGS_PER_SOCKET * len(clients)
        await asyncio.gather(*(ping(i) for i in range(pings)))
        await asyncio.sleep(0.5)
        pinged = cpu_seconds(instance.pid)
        await gen.close()
        return {
            "event_loop": os.environ.get("EVENT_LOOP", "uvloop"),
            "load_average": round(os.getloadavg()[0], 2),
            "connected": connects.sockets,
            "failed": connects.failed,
            "connects_per_second": connects.per_second,
            "cpu_ms_per_connect": round(1000 * (connected - before) / max(1, connects.sockets), 3),
            "cpu_ms_per_ping": round(1000 * (pinged - connected) / max(1, pings), 3),
        }
    finally:
        cluster.stop()


async def cpu_per_typing(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cluster = bench_cluster(
        layer="realtime", state_dir=workdir, instances=2, database_url=args.database_url
    )
    try:
        seeded = users_seed(cluster, users=args.sockets, size=2)
        pids = [instance.pid for instance in cluster.instances]
        gen = LoadGenerator(accounts_assign(seeded, [i.ws_url for i in cluster.instances]))
        connects = await gen.connect(concurrency=args.concurrency)
        await asyncio.sleep(2)  # presence and registry writes that follow the connects
        await gen.run_closed(kind="typing", seconds=TYPING_WARM_UP_SECONDS)
        spy = _profile(args.profile, pids[1])
        before = [cpu_seconds(pid) for pid in pids]
        loadgen_before = cpu_seconds(os.getpid())
        phase = await gen.run_closed(kind="typing", seconds=args.typing)
        after = [cpu_seconds(pid) for pid in pids]
        loadgen_after = cpu_seconds(os.getpid())
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait()
        await gen.close()
        spent = [b - a for a, b in zip(before, after, strict=True)]
        deliveries = max(1, phase.delivered)
        return {
            "event_loop": os.environ.get("EVENT_LOOP", "uvloop"),
            "load_average": round(os.getloadavg()[0], 2),
            "connected": connects.sockets,
            "seconds": phase.seconds,
            "deliveries": phase.delivered,
            "deliveries_per_second": phase.delivered_per_s,
            "errors": dict(phase.errors),
            "instance_cpu_percent": [round(100 * s / phase.seconds, 1) for s in spent],
            "loadgen_cpu_percent": round(100 * (loadgen_after - loadgen_before) / phase.seconds, 1),
            "cpu_us_per_typing_delivery": round(1e6 * sum(spent) / deliveries, 1),
        }
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--profile", type=Path, help="py-spy's collapsed stacks of the connects")
    parser.add_argument("--typing", type=float, help="seconds of full-speed typing to measure")
    args = parser.parse_args()
    measure = cpu_per_typing if args.typing else cpu_per_op
    with tempfile.TemporaryDirectory(prefix="cpu-per-op-") as tmp:
        print(json.dumps(asyncio.run(measure(args, Path(tmp)))))


if __name__ == "__main__":
    main()
