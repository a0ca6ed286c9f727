"""The channel layer on one Redis node against a 3-master Redis Cluster (docs/benchmarks.md).

One invocation starts a redis-server and a 3-master Redis Cluster (no replicas: the
benchmark measures the layer, not replication) and runs on each:

  1. cross-process delivery over 300 groups of 1 member (delivered msg/s, loss counted): the
     workload a cluster spreads, groups landing on every master;
  2. a 100-member group split over 2 processes (deliveries/s): one group is one slot, so one
     master carries it whatever the cluster's size;
  3. Redis commands per group_send, from ``INFO commandstats`` on every node;
  4. Redis connections held by one layer instance as its groups grow from 10 to 10,000,
     per node (the target: constant per node, never per group).

Run: .venv/bin/python -m bench.cluster_bench [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")

GROUPS = 300


def make_layer(url: str, cluster: bool, instance: str) -> Any:
    from realtime_layer import RealtimeChannelLayer

    return RealtimeChannelLayer(hosts=url, cluster=cluster, instance_id=instance)


def receiver_main(
    url: str, cluster: bool, groups: list[str], per_group: int, expected: int, ready: Any, out: Any
) -> None:
    import django

    django.setup()
    asyncio.run(_receiver(url, cluster, groups, per_group, expected, ready, out))


async def _receiver(
    url: str, cluster: bool, groups: list[str], per_group: int, expected: int, ready: Any, out: Any
) -> None:
    layer = make_layer(url, cluster, "bench-receiver")
    channels = []
    for group in groups:
        for _ in range(per_group):
            channel = await layer.new_channel()
            await layer.group_add(group, channel)
            channels.append(channel)
    ready.set()
    received = 0
    last = time.time()

    async def drain(channel: str) -> None:
        nonlocal received, last
        while True:
            await layer.receive(channel)
            received += 1
            last = time.time()

    tasks = [asyncio.create_task(drain(channel)) for channel in channels]
    deadline = time.time() + 120
    while received < expected and time.time() < deadline:
        if received and time.time() - last > 2.0:
            break
        await asyncio.sleep(0.01)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    out.put({"received": received, "last": last, "counters": layer.counters()})
    await layer.close()


def start_receiver(
    url: str, cluster: bool, groups: list[str], per_group: int, expected: int
) -> tuple[Any, Any]:
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(
        target=receiver_main,
        args=(url, cluster, groups, per_group, expected, ready, out),
        daemon=True,
    )
    proc.start()
    if not ready.wait(120):
        raise RuntimeError("receiver did not start")
    return proc, out


async def many_groups(url: str, cluster: bool, count: int) -> tuple[float, int]:
    groups = [f"g{n}" for n in range(GROUPS)]
    proc, out = start_receiver(url, cluster, groups, 1, count)
    layer = make_layer(url, cluster, "bench-sender")
    await asyncio.sleep(0.2)
    started = time.time()
    for n in range(count):
        await layer.group_send(groups[n % GROUPS], {"type": "bench.msg", "n": n})
    result = await asyncio.to_thread(out.get, timeout=180)
    proc.join(30)
    await layer.close()
    return result["received"] / max(result["last"] - started, 1e-9), count - result["received"]


async def fan_out(url: str, cluster: bool, sends: int) -> tuple[float, int]:
    proc, out = start_receiver(url, cluster, ["fan"], 50, 50 * sends)
    layer = make_layer(url, cluster, "bench-sender")
    channels = [await layer.new_channel() for _ in range(50)]
    for channel in channels:
        await layer.group_add("fan", channel)
    await asyncio.sleep(0.2)
    received = 0

    async def drain(channel: str) -> None:
        nonlocal received
        for _ in range(sends):
            await layer.receive(channel)
            received += 1

    started = time.time()
    drains = [asyncio.create_task(drain(channel)) for channel in channels]
    for n in range(sends):
        await layer.group_send("fan", {"type": "bench.msg", "n": n})
        if n % 50 == 0:
            await asyncio.sleep(0)
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*drains)
    except TimeoutError:
        for task in drains:
            task.cancel()
    local_end = time.time()
    result = await asyncio.to_thread(out.get, timeout=180)
    proc.join(30)
    await layer.close()
    total = received + result["received"]
    return total / (max(local_end, result["last"]) - started), 100 * sends - total


def command_calls(ports: list[int]) -> dict[str, int]:
    from scripts.procs import redis_cli

    calls: dict[str, int] = {}
    for port in ports:
        for line in redis_cli("-p", str(port), "INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_"):
                name, _, rest = line.partition(":")
                count = int(rest.split(",")[0].split("=")[1])
                calls[name[8:]] = calls.get(name[8:], 0) + count
    return calls


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def connected_clients(ports: list[int]) -> list[int]:
    from scripts.procs import redis_cli

    counts = []
    for port in ports:
        info = redis_cli("-p", str(port), "INFO", "clients")
        counts.append(
            next(
                int(line.split(":")[1]) for line in info.splitlines() if "connected_clients" in line
            )
        )
    return counts


async def connections_by_groups(
    url: str, cluster: bool, ports: list[int], steps: list[int]
) -> list[tuple[int, list[int]]]:
    """Connections one layer instance holds on each node as its groups grow."""
    baseline = connected_clients(ports)
    layer = make_layer(url, cluster, "bench-groups")
    channel = await layer.new_channel()
    rows = []
    added = 0
    for target in steps:
        while added < target:
            batch = range(added, min(target, added + 500))
            await asyncio.gather(*(layer.group_add(f"grow.{n}", channel) for n in batch))
            added = batch[-1] + 1
        # One real round trip to every node, as health does, so lazily opened pools count too.
        await layer.check(2.0)
        now = connected_clients(ports)
        rows.append((target, [n - b for n, b in zip(now, baseline, strict=True)]))
    subscriptions = layer.counters()["subscriptions"]
    await layer.close()
    assert subscriptions >= steps[-1], subscriptions
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0

    import django

    django.setup()
    from scripts.procs import RedisClusterSet, RedisServer

    single = RedisServer().start()
    cluster = RedisClusterSet(masters=3, replicas=0)
    rows: list[tuple[str, str, str]] = []
    growth: dict[str, list[tuple[int, list[int]]]] = {}
    try:
        cluster.start()
        targets = {
            "1 node": (single.url, False, [single]),
            "3-master cluster": (cluster.url, True, list(cluster.nodes)),
        }
        for name, (url, is_cluster, nodes) in targets.items():
            ports = [node.port for node in nodes]
            pids = [node.pid for node in nodes]
            print(f"{name}: many groups", file=sys.stderr)
            count = int(50_000 * scale)
            before, cpu_before = command_calls(ports), cpu_seconds(pids)
            rate, lost = asyncio.run(many_groups(url, is_cluster, count))
            after, cpu_after = command_calls(ports), cpu_seconds(pids)
            verb = "spublish" if is_cluster else "publish"
            per_send = (after.get(verb, 0) - before.get(verb, 0)) / count
            rows.append(
                (f"cross-process, {GROUPS} groups of 1", name, f"{rate:,.0f} msg/s, lost {lost}")
            )
            rows.append(("Redis commands per group_send", name, f"{per_send:.2f} {verb.upper()}"))
            cpu_us = (cpu_after - cpu_before) / count * 1e6
            rows.append(("Redis CPU per delivered message (all nodes)", name, f"{cpu_us:.1f} µs"))
            print(f"{name}: fan-out", file=sys.stderr)
            sends = int(2_000 * scale)
            rate, lost = asyncio.run(fan_out(url, is_cluster, sends))
            rows.append(
                ("100-member group, 2 processes", name, f"{rate:,.0f} deliveries/s, lost {lost}")
            )
            print(f"{name}: connections", file=sys.stderr)
            steps = [10, 100, 1_000, 10_000] if not args.quick else [10, 100, 1_000]
            growth[name] = asyncio.run(connections_by_groups(url, is_cluster, ports, steps))
    finally:
        cluster.stop()
        single.stop()
    print("| workload | Redis | result |\n|---|---|---|")
    for workload, name, result in rows:
        print(f"| {workload} | {name} | {result} |")
    print("\n| groups | Redis | connections per node (one instance) | total |\n|---|---|---|---|")
    for name, steps_rows in growth.items():
        for groups, per_node in steps_rows:
            print(f"| {groups:,} | {name} | {' / '.join(map(str, per_node))} | {sum(per_node)} |")


if __name__ == "__main__":
    main()
