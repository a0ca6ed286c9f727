"""End-to-end benchmark: the whole system under load, against the bare server.

Run: .venv/bin/python -m bench.e2e.run [--quick] [--memory] [--soak SECONDS] [--storm] [--deploy]
     [--overload N ...] [--via-haproxy]
     .venv/bin/python -m bench.e2e.run --memory --instances 1 --generator-processes 4 \
        --users 10000 --steps 2000 10000 [--introspect]

In one run, on this machine: a bare Daphne echo (the ceiling of one Daphne process), then a
local cluster (Redis, the Firestore emulator, 2 Daphne instances, HAProxy) with this project's
channel layer, then the same cluster with channels_redis's RedisPubSubChannelLayer. Each gets
the same sockets and the same traffic; the script prints tables and ratios, writes every
number to docs/bench/e2e-results.json, and ``bench.e2e.plots`` draws the figures from it.
Everything it starts is stopped before it exits; it talks to 127.0.0.1 only. It asserts
nothing about time: it is a measurement, not a test (docs/benchmarks.md says how to read it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.e2e import deploy, introspect, report
from bench.e2e.introspect import Introspector
from bench.e2e.load import Account, LoadGenerator, accounts_assign
from bench.e2e.load_pool import GeneratorPool
from bench.e2e.measure import memory_ramp, phase, round_trips, rss_settled
from bench.e2e.probes import RedisProbe
from bench.e2e.storm import overload, storm
from bench.e2e.targets import bench_cluster, echo_start, fd_limit_raise, users_seed
from scripts.procs import REPO_ROOT

RESULTS_PATH = REPO_ROOT / "docs" / "bench" / "e2e-results.json"


def machine() -> dict[str, Any]:
    cpu = "?"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        mem_kib = int(handle.readline().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }


async def memory_only(
    args: argparse.Namespace,
    accounts: list[Account],
    *,
    pids: dict[str, int],
    workdir: Path,
    echo: bool = False,
) -> dict[str, Any]:
    """``--memory``: the ramp alone, its sockets held by ``--generator-processes`` processes
    (this one when 1), and with ``--introspect`` each server process's own view at each
    point."""
    ramp: LoadGenerator | GeneratorPool
    if args.generator_processes > 1:
        ramp = await GeneratorPool(
            accounts, processes=args.generator_processes, workdir=workdir, echo=echo
        ).start()
    else:
        ramp = LoadGenerator(accounts, echo=echo)
    spy = Introspector(_introspect_dir(workdir), pids) if args.introspect else None
    try:
        result = await memory_ramp(
            ramp, steps=args.steps, pids=pids, at_point=spy.take if spy else None
        )
    finally:
        await ramp.close()
    result["instances"] = len(pids)
    result["generator_processes"] = args.generator_processes
    if spy is not None:
        result["introspect"] = spy.reports
    return result


def _introspect_dir(workdir: Path) -> Path:
    directory = workdir / "introspect"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _introspect_env(args: argparse.Namespace, workdir: Path) -> dict[str, str]:
    if not args.introspect:
        return {}
    return introspect.instance_env(_introspect_dir(workdir), trace=args.tracemalloc)


async def bench_echo(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    echo = echo_start(log_dir=workdir / "echo", env=_introspect_env(args, workdir / "echo"))
    try:
        pids = {"echo": echo.pid}
        others = {"loadgen": os.getpid()}
        accounts = accounts_assign(_fake_seed(args.users), [echo.ws_url])
        if args.memory:
            memory = await memory_only(
                args, accounts, pids=pids, workdir=workdir / "echo", echo=True
            )
            return {"memory": memory}
        gen = LoadGenerator(accounts, echo=True)
        result: dict[str, Any] = {"memory": await memory_ramp(gen, steps=args.steps, pids=pids)}
        result["sweep"] = []
        for rate in args.rates:
            run = _open(gen, message_rate=rate, typing_rate=0, seconds=args.seconds)
            result["sweep"].append(await phase(gen, run, pids=pids, redis=None, others=others))
        run = _closed(gen, "echo", args.seconds)
        result["saturation"] = {"echo": await phase(gen, run, pids=pids, redis=None, others=others)}
        result["integrity"] = (await gen.settle(within=30)).as_dict()
        await gen.close()
        return result
    finally:
        echo.stop(timeout=5)


async def bench_layer(args: argparse.Namespace, layer: str, workdir: Path) -> dict[str, Any]:
    cluster = bench_cluster(
        layer=layer,
        state_dir=workdir / layer,
        instances=args.instances,
        database_url=args.database_url,
        # --memory: the ramp's 100 handshakes in flight are all admitted, so that what is
        # measured is sockets, not the garbage of connects shed with 503/1013.
        env={
            **({"CONNECT_MAX_WAIT_MS": "10000"} if args.memory else {}),
            **_introspect_env(args, workdir / layer),
        },
    )
    redis: RedisProbe | None = None
    try:
        seeded = users_seed(cluster, users=args.users + 1, size=args.size)
        urls = [i.ws_url for i in cluster.instances]
        pids = {i.instance_id: i.pid for i in cluster.instances}
        redis = RedisProbe(cluster.redis.url)
        others = {"redis": cluster.redis.pid, "loadgen": os.getpid()}
        if cluster.firestore is not None:
            others["firestore"] = cluster.firestore.pid
        # The last user is the round-trip probe's: alone in the last conversation when the
        # users divide evenly, so its connect announces presence to nobody but itself.
        accounts = accounts_assign(seeded, urls)
        probe = LoadGenerator(accounts[-1:])
        result: dict[str, Any] = {}
        if args.memory:
            spy = _profile(args, cluster.instances[-1].pid, f"{layer}-connect")
            result["memory"] = await memory_only(
                args, accounts[: args.users], pids=pids, workdir=workdir / layer
            )
            if spy is not None:
                spy.wait(timeout=args.seconds + 30)
            return result
        result["round_trips"] = await round_trips(probe, redis, trials=args.trials)
        gen = LoadGenerator(accounts[: args.users])
        spy = _profile(args, cluster.instances[-1].pid, f"{layer}-connect")
        result["memory"] = await memory_ramp(gen, steps=args.steps, pids=pids)
        if spy is not None:
            spy.wait(timeout=args.seconds + 30)
        result["sweep"] = []
        for rate in args.rates:
            share = args.message_share
            run = _open(
                gen,
                message_rate=rate * share,
                typing_rate=rate * (1 - share),
                seconds=args.seconds,
            )
            result["sweep"].append(await phase(gen, run, pids=pids, redis=redis, others=others))
        result["saturation"] = {}
        for kind in ("typing", "message"):
            senders = args.message_senders if kind == "message" else None
            run = _closed(gen, kind, args.seconds, senders)
            spy = _profile(args, cluster.instances[1].pid, f"{layer}-{kind}")
            result["saturation"][kind] = await phase(
                gen, run, pids=pids, redis=redis, others=others
            )
            if spy is not None:
                spy.wait(timeout=args.seconds + 30)
        result["integrity"] = (await gen.settle(within=30)).as_dict()
        result["closed_unexpectedly"] = gen.closed_unexpectedly
        await gen.close()
        result["rss_after_close_kib"] = await rss_settled(pids)
        return result
    finally:
        if redis is not None:
            redis.close()
        cluster.stop()


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """``--soak S``: 2 instances, ``--users`` sockets, steady traffic for S seconds, RSS
    sampled every ``--soak-sample`` seconds, errors and the tally at the end."""
    cluster = bench_cluster(
        layer="realtime", state_dir=workdir / "soak", instances=2, database_url=args.database_url
    )
    try:
        seeded = users_seed(cluster, users=args.users, size=args.size)
        pids = {i.instance_id: i.pid for i in cluster.instances}
        gen = LoadGenerator(accounts_assign(seeded, [i.ws_url for i in cluster.instances]))
        connect = await gen.connect()
        curve = [{"t": 0.0, "sockets": gen.open_sockets, "rss_kib": await rss_settled(pids)}]
        started = time.monotonic()
        phases = []
        while (elapsed := time.monotonic() - started) < args.soak:
            seconds = min(args.soak_sample, args.soak - elapsed)
            run = _open(
                gen,
                message_rate=args.soak_rate,
                typing_rate=args.soak_typing_rate,
                seconds=seconds,
            )
            phases.append(await phase(gen, run, pids=pids, redis=None))
            curve.append(
                {
                    "t": round(time.monotonic() - started, 1),
                    "sockets": gen.open_sockets,
                    "rss_kib": {n: _rss(p) for n, p in pids.items()},
                }
            )
        tally = (await gen.settle(within=30)).as_dict()
        errors: dict[str, int] = {}
        for item in phases:
            for code, count in item["errors"].items():
                errors[code] = errors.get(code, 0) + count
        latencies = [p["latency_ms"]["p99"] for p in phases if p["latency_ms"]["p99"] is not None]
        await gen.close()
        return {
            "seconds": args.soak,
            "sockets": gen.open_sockets or connect.sockets,
            "connect": connect.__dict__,
            "message_rate": args.soak_rate,
            "typing_rate": args.soak_typing_rate,
            "curve": curve,
            "errors": errors,
            "closed_unexpectedly": gen.closed_unexpectedly,
            "integrity": tally,
            "delivered": sum(p["delivered"] for p in phases),
            "p99_ms_by_sample": latencies,
        }
    finally:
        cluster.stop()


def _profile(args: argparse.Namespace, pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """``--profile DIR``: py-spy samples the receiving instance for the phase (needs root or
    ptrace rights); a flame graph and the collapsed stacks go to DIR."""
    if not args.profile:
        return None
    out: Path = args.profile
    out.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    seconds = str(max(1, int(args.seconds)))
    common = ["--pid", str(pid), "--duration", seconds, "--nonblocking"]
    return subprocess.Popen(
        [spy, "record", *common, "--format", "raw", "-o", str(out / f"{name}.txt")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _rss(pid: int) -> int:
    from bench.e2e.probes import rss_kib

    return rss_kib(pid)


def _open(gen: LoadGenerator, **kwargs: Any) -> Any:
    return lambda: gen.run_open(**kwargs)


def _closed(gen: LoadGenerator, kind: str, seconds: float, senders: int | None = None) -> Any:
    return lambda: gen.run_closed(kind=kind, seconds=seconds, senders=senders)


def _fake_seed(users: int) -> dict[str, Any]:
    """Echo sockets need no accounts; the same socket count, in pairs like the cluster's."""
    ids = [str(i) for i in range(users)]
    return {
        "users": [{"id": uid, "token": ""} for uid in ids],
        "conversations": [
            {"id": f"c{n}", "participant_ids": ids[n : n + 2]} for n in range(0, users, 2)
        ],
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=2000, help="sockets (one per user)")
    parser.add_argument("--size", type=int, default=2, help="users per conversation")
    parser.add_argument("--steps", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[100, 200, 400, 800, 1600],
        help="frames offered per second, messages and typing together",
    )
    parser.add_argument(
        "--message-share",
        type=float,
        default=0.05,
        help="share of messages in the offered frames (the rest is typing); messages are "
        "written to the database, typing is not",
    )
    # Each sender keeps one message in flight; a socket may send RATE_LIMIT_FRAMES_PER_SECOND
    # (20) a second, so 100 senders capped the phase at 2,000 messages a second, and past it
    # the instances refused frames (rate_limited) and closed flooding sockets (4429) instead of
    # showing what they write. 400 stay under the limit up to 8,000 a second.
    parser.add_argument(
        "--message-senders", type=int, default=400, help="sockets sending messages at full speed"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument("--trials", type=int, default=9, help="single connects for round trips")
    parser.add_argument("--layers", nargs="+", default=["realtime", "pubsub"])
    parser.add_argument("--no-echo", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a small run to try the tool")
    parser.add_argument(
        "--memory", action="store_true", help="the connect and memory ramp only (echo, layers)"
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=2,
        help="instances of each layer's cluster (--memory: 1 measures one instance's sockets)",
    )
    parser.add_argument(
        "--generator-processes",
        type=int,
        default=1,
        help="--memory: processes holding the ramp's sockets (bench/e2e/load_pool.py)",
    )
    parser.add_argument(
        "--introspect",
        action="store_true",
        help="--memory: each server process reports its own memory (smaps, pymalloc, glibc "
        "malloc, threads) at each point of the ramp (bench/e2e/introspect)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="--introspect: the server processes trace their heap from start-up (costs memory: "
        "not for the RSS figures)",
    )
    parser.add_argument("--soak", type=float, default=0, help="soak mode: seconds")
    parser.add_argument("--soak-rate", type=float, default=10, help="soak messages/s")
    parser.add_argument("--soak-typing-rate", type=float, default=200, help="soak typing/s")
    parser.add_argument("--soak-sample", type=float, default=10, help="soak sample every S")
    parser.add_argument("--storm", action="store_true", help="the reconnect-storm phase only")
    parser.add_argument("--storm-users", type=int, default=4000, help="sockets, half killed")
    parser.add_argument("--storm-ping-rate", type=float, default=200, help="survivor pings/s")
    parser.add_argument("--storm-message-rate", type=float, default=20, help="messages/s")
    parser.add_argument("--storm-calm", type=float, default=3.0, help="seconds before/after")
    parser.add_argument("--storm-deadline", type=float, default=60.0, help="give up after S")
    parser.add_argument(
        "--overload", type=int, nargs="+", help="clients connecting at once to one instance"
    )
    parser.add_argument(
        "--via-haproxy",
        action="store_true",
        help="--storm, --overload: clients come back through HAProxy, which sheds connects "
        "past CONNECT_RATE_PER_INSTANCE itself (default: straight to the instance)",
    )
    deploy.deploy_arguments(parser)
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    parser.add_argument("--profile", type=Path, help="py-spy the full-speed phases into DIR")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="postgres://... for a database of the cluster's own beside it (default: SQLite)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.steps, args.rates, args.seconds, args.trials = (
            200,
            [100, 200],
            [100, 400],
            3.0,
            3,
        )
    args.steps = [s for s in args.steps if s <= args.users] or [args.users]
    if args.steps[-1] != args.users:
        args.steps.append(args.users)
    return args


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="e2e-bench-") as tmp:
        workdir = Path(tmp)
        if args.overload:
            results["overload"] = await overload(args, workdir)
        if args.deploy:
            results["deploy"] = await deploy.rolling_deploy(args, workdir)
        elif args.storm:
            results["storm"] = await storm(args, workdir)
        elif args.soak:
            results["soak"] = await soak(args, workdir)
        elif not args.overload:  # --overload alone is its own run
            if not args.no_echo:
                results["echo"] = await bench_echo(args, workdir)
            results["layers"] = {}
            for layer in args.layers:
                results["layers"][layer] = await bench_layer(args, layer, workdir)
    results["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    limit = fd_limit_raise()
    storm_users = max([args.storm_users if args.storm else 0, *(args.overload or [])])
    sockets = max(storm_users, args.deploy_sockets if args.deploy else 0)
    needed = 2 * max(args.users, sockets) + 256
    if args.memory:  # each process holds its own share: the server's, each generator's
        needed = -(-args.users // min(args.instances, args.generator_processes)) + 256
    if limit < needed:
        print(f"open-file limit {limit} is too low for {args.users} sockets", file=sys.stderr)
        return 1
    results = asyncio.run(main_async(args))
    out: Path = args.out
    if out == RESULTS_PATH and args.overload:
        out = out.with_name("e2e-overload.json")
    if out == RESULTS_PATH and args.deploy:
        out = out.with_name(f"e2e-deploy-{args.deploy_sockets}.json")
    elif out == RESULTS_PATH and args.storm:
        out = out.with_name("e2e-storm.json")
    elif out == RESULTS_PATH and args.soak:
        out = out.with_name("e2e-soak.json")
    elif out == RESULTS_PATH and args.memory:
        out = out.with_name("e2e-memory.json")
    elif out == RESULTS_PATH and args.quick:  # a try-out never replaces the published numbers
        out = Path(tempfile.gettempdir()) / "e2e-quick.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(deploy.render(results["deploy"]) if args.deploy else report.render(results))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
