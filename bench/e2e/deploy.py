"""The rolling-deploy phase of the end-to-end bench (docs/benchmarks.md, "Rolling deploy").

Two instances behind HAProxy on their own database (PostgreSQL with ``--database-url``), no
Firestore (presence kept in each process). ``--deploy-sockets`` users, each one
``DeliveryClient`` in conversations of ``--size``, connected through HAProxy; messages are
posted over REST at ``--deploy-message-rate`` the whole time. Then each instance in turn is
sent SIGTERM, waited for, and replaced by a new process with a new instance id on the same
port (the balancer's server entry is the port), and the next one waits until every client is
back. Clients behave as the project's client library does: after ``1012`` they reconnect at
once, after ``1013`` they wait a uniformly random delay in ``[N, 2N)`` ms where the close
reason says ``retry_after_ms=N`` (a jittered backoff without it), after anything else a
jittered exponential backoff; every reconnect resumes.

Reported: per client of a drained instance, the time from its ``1012`` to the resume ``ack``
of its next socket (p50/p95/p99/max); what was lost or duplicated against the event log
(``tests.support.delivery_ledger``, as in ``bench.faults``); clients that saw ``1013`` more
than once; and each drained instance's time from its last socket closed to its exit.
It asserts nothing about time: it is a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from bench.e2e.load import percentiles
from bench.e2e.targets import users_seed
from realtime_project.close_codes import WS_1012_SERVICE_RESTART, WS_1013_TRY_AGAIN_LATER
from scripts.deployment import DAPHNE_PING_ARGS, Cluster
from scripts.procs import DaphneInstance
from tests.support.delivery_client import DeliveryClient, clients_close
from tests.support.delivery_ledger import committed_logs, delivery_report, last_seqs
from tests.support.delivery_traffic import Sender, Traffic, send_at_rate

DEPLOY_ENV = {
    "HEARTBEAT_INTERVAL_SECONDS": "2",
    "CONNECTION_TTL_SECONDS": "10",
    # The balancer below sees a 503 within 1 s x fall 2: the drain waits for that.
    "DRAIN_DELAY_SECONDS": "3",
    # The traffic is many users' worth through few accounts: no per-user limit should bite.
    "RATE_LIMIT_FRAMES_PER_SECOND": "1000",
    "RATE_LIMIT_BURST": "1000",
    "REBALANCE_CLOSE_RATE": "0",
    "LOG_LEVEL": "WARNING",
}
DEPLOY_CHECK = "inter 1s fastinter 500ms downinter 500ms fall 2 rise 1"
RETRY_AFTER = re.compile(r"retry_after_ms=(\d+)")
CONNECT_SECONDS = 10.0


@dataclass
class Follower:
    """One client and what its reconnects went through."""

    client: DeliveryClient
    codes_1013: int = 0
    attempts: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def _backoff(attempt: int, *, initial: float = 0.25, ceiling: float = 10.0) -> float:
    """Equal jitter, as the client library: between half and all of the capped exponential."""
    top = min(ceiling, initial * 2**attempt)
    return top / 2 + random.uniform(0, top / 2)


async def _reconnect(follower: Follower, url: str, stop: asyncio.Event) -> None:
    attempt = 0
    while not stop.is_set():
        follower.attempts += 1
        try:
            await follower.client.connect(url, within=CONNECT_SECONDS)
            return
        except websockets.ConnectionClosed as exc:
            close = exc.rcvd
            if close is not None and close.code == WS_1013_TRY_AGAIN_LATER:
                follower.codes_1013 += 1
                hint = RETRY_AFTER.search(close.reason or "")
                if hint:
                    n = int(hint.group(1)) / 1000
                    await asyncio.sleep(random.uniform(n, 2 * n))
                    continue
            follower.errors[f"closed {close.code if close else None}"] += 1
        except websockets.InvalidStatus as exc:
            follower.errors[f"HTTP {exc.response.status_code}"] += 1
        except (OSError, TimeoutError, websockets.WebSocketException, ConnectionError) as exc:
            follower.errors[type(exc).__name__] += 1
        await asyncio.sleep(_backoff(attempt))
        attempt += 1


async def _follow(follower: Follower, url: str, stop: asyncio.Event) -> None:
    """Keep the client connected through the balancer until the run stops."""
    client = follower.client
    while not stop.is_set():
        closed = asyncio.create_task(client.wait_closed(within=3600))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (closed, stopped):
            task.cancel()
        if stop.is_set():
            return
        if client.current.close_code != WS_1012_SERVICE_RESTART:
            await asyncio.sleep(_backoff(0))
        await _reconnect(follower, url, stop)


def _all_back(followers: list[Follower]) -> bool:
    return all(
        f.client.sockets and f.client.current.open and f.client.current.resume_acked_at
        for f in followers
    )


async def _wait(predicate: Any, *, within: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


async def _exit_time(instance: DaphneInstance, *, within: float) -> float | None:
    """When the process ended (``time.monotonic()``), polled; None if it outlived ``within``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not instance.alive():
            return time.monotonic()
        await asyncio.sleep(0.05)
    return None


async def _roll(
    cluster: Cluster, index: int, followers: list[Follower], args: argparse.Namespace
) -> dict[str, Any]:
    """Drain instance ``index`` and replace it; what it took."""
    old = cluster.instances[index]
    survivor = cluster.instances[1 - index] if len(cluster.instances) == 2 else None
    spy = _profile(args, survivor, f"deploy-survivor-{index + 1}") if survivor else None
    placed = sum(1 for f in followers if f.client.current.instance_id == old.instance_id)
    signalled = time.monotonic()
    old.signal(15)
    ended = await _exit_time(old, within=args.deploy_exit_deadline)
    killed = ended is None
    if ended is None:
        old.kill()
    exited = ended if ended is not None else time.monotonic()
    # The replacement: a new process, a new instance id, the same port (the balancer's entry).
    new = DaphneInstance(
        instance_id=f"{old.instance_id}-next",
        env=cluster.instance_env(),
        port=old.port,
        log_dir=cluster.log_dir,
        extra_args=DAPHNE_PING_ARGS,
    )
    await asyncio.to_thread(new.start)
    cluster.instances[index] = new
    started = time.monotonic()
    back = await _wait(lambda: _all_back(followers), within=args.deploy_settle)
    if spy is not None:
        await asyncio.to_thread(spy.wait, 60)
    closes = [
        record.closed_at
        for f in followers
        for record in f.client.sockets
        if record.instance_id == old.instance_id
        and record.close_code == WS_1012_SERVICE_RESTART
        and record.closed_at is not None
    ]
    last_close = max(closes) if closes else None
    return {
        "instance": old.instance_id,
        "replacement": new.instance_id,
        "sockets": placed,
        "closed_1012": len(closes),
        "sigterm_to_last_close_s": round(last_close - signalled, 2) if last_close else None,
        "last_close_to_exit_s": round(exited - last_close, 2) if last_close else None,
        "sigterm_to_exit_s": round(exited - signalled, 2),
        "killed": killed,
        "replacement_started_s": round(started - signalled, 2),
        "all_back": back,
        "all_back_after_s": round(time.monotonic() - signalled, 2),
    }


def _phases(followers: list[Follower]) -> dict[str, dict[str, float | None]]:
    """Where a 1012 client's gap went: to the successful attempt's start (failed attempts and
    waits), the WebSocket handshake to ``connected``, and ``resume`` to its ack (ms)."""
    waits, connects, resumes = [], [], []
    for f in followers:
        for previous, following in itertools.pairwise(f.client.sockets):
            if previous.close_code != WS_1012_SERVICE_RESTART or previous.closed_at is None:
                continue
            if following.connected_at is None or following.resume_acked_at is None:
                continue
            waits.append(1000 * (following.attempt_started_at - previous.closed_at))
            connects.append(1000 * (following.connected_at - following.attempt_started_at))
            resumes.append(1000 * (following.resume_acked_at - following.connected_at))
    return {
        "close_to_last_attempt_ms": percentiles(waits),
        "attempt_to_connected_ms": percentiles(connects),
        "connected_to_resume_ack_ms": percentiles(resumes),
    }


def _profile(
    args: argparse.Namespace, instance: DaphneInstance, name: str
) -> subprocess.Popen[bytes] | None:
    """``--profile DIR``: py-spy samples the surviving instance while the other drains and
    its clients come over (collapsed stacks in DIR; needs ptrace rights)."""
    if not args.profile:
        return None
    out: Path = args.profile
    out.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [
            spy, "record", "--pid", str(instance.pid),
            "--duration", str(args.deploy_profile_seconds), "--nonblocking",
            "--format", "raw", "-o", str(out / f"{name}.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _gaps(followers: list[Follower]) -> list[float]:
    """Per 1012: from the close to the resume ack of the client's next socket (ms)."""
    gaps = []
    for f in followers:
        sockets = f.client.sockets
        for previous, following in itertools.pairwise(sockets):
            if previous.close_code != WS_1012_SERVICE_RESTART or previous.closed_at is None:
                continue
            if following.resume_acked_at is not None:
                gaps.append(1000 * (following.resume_acked_at - previous.closed_at))
    return gaps


async def rolling_deploy(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The whole phase: connect, traffic, drain and replace each instance, count."""
    env = dict(DEPLOY_ENV)
    for setting in args.deploy_env or []:
        name, _, value = setting.partition("=")
        env[name] = value
    cluster = Cluster(
        instances=2,
        state_dir=workdir / "deploy",
        env=env,
        with_firestore=False,
        seed=False,
        check=DEPLOY_CHECK,
        database_url=args.database_url,
    )
    await asyncio.to_thread(cluster.start)
    try:
        return await _run(args, cluster, env)
    finally:
        await asyncio.to_thread(cluster.stop)


async def _run(args: argparse.Namespace, cluster: Cluster, env: dict[str, str]) -> dict[str, Any]:
    seeded = await asyncio.to_thread(users_seed, cluster, users=args.deploy_sockets, size=args.size)
    members: dict[str, list[str]] = {}
    for conv in seeded["conversations"]:
        for uid in conv["participant_ids"]:
            members.setdefault(uid, []).append(conv["id"])
    followers = [
        Follower(
            DeliveryClient(name=f"u{u['id']}", token=u["token"], conversations=members[u["id"]])
        )
        for u in seeded["users"]
    ]
    stop = asyncio.Event()
    slots = asyncio.Semaphore(100)

    async def first_connect(follower: Follower) -> None:
        async with slots:
            await _reconnect(follower, cluster.ws_url, stop)

    began = time.monotonic()
    await asyncio.gather(*(first_connect(f) for f in followers))
    connect_seconds = time.monotonic() - began
    for f in followers:
        f.codes_1013, f.attempts = 0, 0
        f.errors.clear()
    placement = Counter(f.client.current.instance_id for f in followers)
    print(
        f"deploy: {len(followers)} sockets in {connect_seconds:.1f}s: {dict(placement)}", flush=True
    )
    watchers = [asyncio.create_task(_follow(f, cluster.ws_url, stop)) for f in followers]
    by_id = {u["id"]: u["token"] for u in seeded["users"]}
    senders = [
        Sender(f"u{c['participant_ids'][0]}", by_id[c["participant_ids"][0]], c["id"])
        for c in seeded["conversations"]
    ]
    traffic = Traffic()
    traffic_done = asyncio.Event()
    sending = asyncio.create_task(
        send_at_rate(
            [cluster.url],
            senders,
            rate=args.deploy_message_rate,
            seconds=3600,
            traffic=traffic,
            in_flight=16,
            give_up_after=60,
            until=traffic_done,
        )
    )
    rolls = []
    try:
        await asyncio.sleep(args.deploy_calm)
        for index in range(len(cluster.instances)):
            roll = await _roll(cluster, index, followers, args)
            print(f"deploy: {roll}", flush=True)
            rolls.append(roll)
            await asyncio.sleep(args.deploy_calm)
    finally:
        traffic_done.set()
        await sending
    # Read back in parallel: thousands of conversations one after another outlast the run.
    readers = asyncio.Semaphore(16)

    async def read_log(conv: dict[str, Any]) -> dict[str, Any]:
        async with readers:
            return await asyncio.to_thread(
                committed_logs,
                cluster.url,
                token=by_id[conv["participant_ids"][0]],
                conversation_ids=[conv["id"]],
            )

    logs = {}
    for part in await asyncio.gather(*(read_log(c) for c in seeded["conversations"])):
        logs.update(part)
    wanted = last_seqs(logs)
    settle_began = time.monotonic()
    behind = []
    for f in followers:
        try:
            await f.client.wait_reached(
                {c: wanted[c] for c in f.client.conversations},
                within=max(1.0, 60 - (time.monotonic() - settle_began)),
            )
        except TimeoutError as exc:
            behind.append(str(exc))
    stop.set()
    await asyncio.gather(*watchers, return_exceptions=True)
    clients = [f.client for f in followers]
    whole = delivery_report(clients, logs)
    total = whole.total()
    gaps = _gaps(followers)
    result = {
        "sockets": len(followers),
        "size": args.size,
        "database": "postgresql" if str(args.database_url).startswith("postgres") else "sqlite",
        "settings": {k: v for k, v in env.items() if k.startswith(("DRAIN_", "CONNECT_"))},
        "connect_seconds": round(connect_seconds, 1),
        "message_rate": args.deploy_message_rate,
        "committed": len(traffic.sent),
        "send_failures": traffic.failed[:5],
        "owed": total.owed,
        "lost": len(total.lost) + sum(len(v) for v in whole.client_lost.values()),
        "duplicated": len(total.duplicated),
        "out_of_order": len(total.out_of_order),
        "unrecovered": whole.unrecovered,
        "gap_1012_to_resume_ack_ms": percentiles(gaps),
        "gaps_counted": len(gaps),
        "gap_phases": _phases(followers),
        "clients_1013_more_than_once": sum(1 for f in followers if f.codes_1013 > 1),
        "codes_1013": sum(f.codes_1013 for f in followers),
        "reconnect_errors": dict(sum((f.errors for f in followers), Counter())),
        "rolls": rolls,
        "behind_at_end": behind[:5],
    }
    await clients_close(clients)
    return result


def render(result: dict[str, Any]) -> str:
    gap = result["gap_1012_to_resume_ack_ms"]
    lines = [
        f"Rolling deploy: {result['sockets']} sockets, 2 instances ({result['database']}), "
        f"{result['message_rate']:.0f} messages/s, settings {result['settings']}",
        f"  1012 -> resume ack ms ({result['gaps_counted']} clients): p50 {gap['p50']}  "
        f"p95 {gap['p95']}  p99 {gap['p99']}  max {gap['max']}",
        "  of which (p50/p99): "
        + ", ".join(f"{name} {v['p50']}/{v['p99']}" for name, v in result["gap_phases"].items()),
        f"  owed {result['owed']}, lost {result['lost']}, duplicated {result['duplicated']}, "
        f"out of order {result['out_of_order']} ({result['committed']} messages committed)",
        f"  1013s {result['codes_1013']}; clients with more than one: "
        f"{result['clients_1013_more_than_once']}; reconnect errors {result['reconnect_errors']}",
    ]
    for roll in result["rolls"]:
        lines.append(
            f"  {roll['instance']}: {roll['sockets']} sockets, last 1012 "
            f"{roll['sigterm_to_last_close_s']} s after SIGTERM, exit "
            f"{roll['last_close_to_exit_s']} s after the last close"
            f"{' (KILLED)' if roll['killed'] else ''}, all back {roll['all_back_after_s']} s"
        )
    if result["behind_at_end"]:
        lines.append(f"  behind at the end: {result['behind_at_end']}")
    return "\n".join(lines)


def deploy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--deploy", action="store_true", help="the rolling-deploy phase only")
    parser.add_argument("--deploy-sockets", type=int, default=4000, help="one per user")
    parser.add_argument("--deploy-message-rate", type=float, default=20, help="REST messages/s")
    parser.add_argument("--deploy-calm", type=float, default=3.0, help="seconds between steps")
    parser.add_argument("--deploy-settle", type=float, default=180.0, help="wait for clients")
    parser.add_argument(
        "--deploy-exit-deadline", type=float, default=120.0, help="kill a drained instance after"
    )
    parser.add_argument(
        "--deploy-profile-seconds", type=int, default=30, help="py-spy length per drain"
    )
    parser.add_argument(
        "--deploy-env", action="append", help="NAME=VALUE for the instances (repeatable)"
    )
