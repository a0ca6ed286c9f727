"""The fault bench: durable events at a fixed rate through a schedule of faults, every
delivery counted (docs/benchmarks.md, "Delivery under faults").

A 2-instance cluster (HAProxy, Redis, PostgreSQL when ``--database-url`` or DATABASE_URL
names it, SQLite otherwise; presence kept in each process, no Firestore) with ``--users``
users in conversations of ``--size``, each user one ``DeliveryClient`` (tests/support/) on
instance 1 or 2 in turn. Messages are posted over REST through HAProxy at ``--rate`` a second
(each with a ``client_id``, retried through failures), while the schedule injects, evenly
spaced: Redis restarted (killed, back with its append-only file), Redis restarted empty
(killed, its file deleted), instance 1 SIGKILLed (started again 5 s later), instance 2
drained with SIGTERM (started again once it exited). Every client is the project's client
package (``realtime_client``): whose socket closes reconnects by itself, to its instance or
through HAProxy, and resumes.

At the end, once every client holds every committed event (or a deadline passed), each
socket is judged against the event log (``tests.support.delivery_ledger``): per fault, the
events committed from its injection to the next one, owed / lost / duplicated; the time from
a reconnect attempt to its resume ``ack``; and, on PostgreSQL, what sequencing costs a write
(``bench.faults.seqcost``).

    .venv/bin/python -m bench.faults.run            # ~4 minutes of traffic
    .venv/bin/python -m bench.faults.run --quick    # ~1 minute
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in {None, ""}:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.e2e.load import percentiles
from bench.e2e.targets import fd_limit_raise, users_seed
from scripts.deployment import Cluster
from scripts.procs import LOOPBACK, REPO_ROOT, IsolatedDatabase, RedisServer, manage, python_bin
from scripts.procs import wait_until as procs_wait_until
from tests.support.delivery_client import DeliveryClient, clients_close
from tests.support.delivery_ledger import committed_logs, delivery_report, last_seqs
from tests.support.delivery_traffic import Sender, Traffic, send_at_rate

RESULTS_PATH = REPO_ROOT / "docs" / "bench" / "faults-results.json"

BENCH_ENV = {
    "HEARTBEAT_INTERVAL_SECONDS": "1",
    "CONNECTION_TTL_SECONDS": "5",
    "REDIS_SOCKET_TIMEOUT_SECONDS": "1",
    "REDIS_CONNECT_TIMEOUT_SECONDS": "0.5",
    "HEALTH_TIMEOUT_SECONDS": "0.5",
    "HEALTH_CACHE_SECONDS": "0.2",
    "DRAIN_DELAY_SECONDS": "1.5",
    "HEAL_INTERVAL_SECONDS": "1",
    # The traffic is many users' worth through few accounts: no per-user limit should bite.
    "RATE_LIMIT_FRAMES_PER_SECOND": "1000",
    "RATE_LIMIT_BURST": "1000",
    "LOG_LEVEL": "WARNING",
}
OUTAGE_SECONDS = 3.0
KILLED_INSTANCE_DOWN_SECONDS = 5.0


class DurableRedis(RedisServer):
    """redis-server with an append-only file, so a restart keeps (or, wiped, loses) its data."""

    def start(self, timeout: float = 10.0) -> DurableRedis:
        self._spawn(
            [
                self.binary(),
                "--port", str(self.port),
                "--bind", LOOPBACK,
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--dir", str(self.log_dir),
            ]
        )  # fmt: skip
        procs_wait_until(self._ready, timeout=timeout, what=f"redis-server on {self.port}")
        return self

    def wipe(self) -> None:
        shutil.rmtree(self.log_dir / "appendonlydir", ignore_errors=True)


@dataclass
class Fault:
    name: str
    at: float = 0.0  # time.monotonic() of the injection
    until: float = 0.0  # the next fault's injection (or the end of traffic)
    note: str = ""


@dataclass
class Run:
    cluster: Cluster
    clients: list[DeliveryClient]
    faults: list[Fault] = field(default_factory=list)


async def _inject(run: Run, fault: Fault) -> None:
    cluster = run.cluster
    redis = cluster.redis
    assert isinstance(redis, DurableRedis)
    one, two = cluster.instances
    if fault.name == "redis restart":
        await asyncio.to_thread(redis.kill)
        await asyncio.sleep(OUTAGE_SECONDS)
        await asyncio.to_thread(redis.start)
    elif fault.name == "redis restart empty":
        await asyncio.to_thread(redis.kill)
        redis.wipe()
        await asyncio.sleep(OUTAGE_SECONDS)
        await asyncio.to_thread(redis.start)
    elif fault.name == "instance SIGKILL":
        await asyncio.to_thread(one.kill)
        await asyncio.sleep(KILLED_INSTANCE_DOWN_SECONDS)
        await asyncio.to_thread(cluster.restart_instance, one)
    elif fault.name == "instance drain":
        two.signal(15)
        await asyncio.to_thread(
            procs_wait_until, lambda: not two.alive(), timeout=60, what="drained exit"
        )
        await asyncio.to_thread(cluster.restart_instance, two)


async def _schedule(run: Run, names: list[str], *, seconds: float) -> None:
    """Each fault at an even share of the run; the first share is fault-free."""
    begin = time.monotonic()
    slot = seconds / (len(names) + 1)
    run.faults.append(Fault("none", at=begin))
    for index, name in enumerate(names, start=1):
        await asyncio.sleep(max(0.0, begin + index * slot - time.monotonic()))
        fault = Fault(name, at=time.monotonic())
        run.faults[-1].until = fault.at
        run.faults.append(fault)
        print(f"  t={fault.at - begin:6.1f}s  {name}", flush=True)
        await _inject(run, fault)


async def _fault_run(args: argparse.Namespace, cluster: Cluster) -> dict[str, Any]:
    seeded = users_seed(cluster, users=args.users, size=args.size)
    urls = [i.ws_url for i in cluster.instances]
    clients = []
    for index, user in enumerate(seeded["users"]):
        conversations = [
            c["id"] for c in seeded["conversations"] if user["id"] in c["participant_ids"]
        ]
        client = DeliveryClient(
            name=f"u{user['id']}", token=user["token"], conversations=conversations
        )
        # Placed on one instance; after a drop the package moves on through HAProxy.
        await client.connect(urls[index % len(urls)], failover=[cluster.ws_url])
        clients.append(client)
    senders = [
        Sender(f"u{uid}", token, c["id"])
        for c in seeded["conversations"]
        for uid, token in [
            (u["id"], u["token"]) for u in seeded["users"] if u["id"] in c["participant_ids"]
        ]
    ]
    run = Run(cluster=cluster, clients=clients)
    traffic = Traffic()
    print(f"{len(clients)} clients, {len(seeded['conversations'])} conversations, "
          f"{args.rate}/s for {args.seconds:.0f}s", flush=True)  # fmt: skip
    began = time.monotonic()
    schedule = asyncio.create_task(_schedule(run, args.faults, seconds=args.seconds))
    await send_at_rate(
        [cluster.url],
        senders,
        rate=args.rate,
        seconds=args.seconds,
        traffic=traffic,
        in_flight=16,
        give_up_after=60,
    )
    await schedule
    ended = time.monotonic()
    run.faults[-1].until = ended
    # Every socket is back and every client holds everything committed (or the deadline).
    logs = {}
    for conv in seeded["conversations"]:
        member = next(u for u in seeded["users"] if u["id"] in conv["participant_ids"])
        logs.update(
            await asyncio.to_thread(
                committed_logs, cluster.url, token=member["token"], conversation_ids=[conv["id"]]
            )
        )
    wanted = last_seqs(logs)
    settle_began = time.monotonic()
    behind = []
    for client in clients:
        try:
            await client.wait_reached(
                {c: wanted[c] for c in client.conversations},
                within=max(1.0, 60 - (time.monotonic() - settle_began)),
            )
        except TimeoutError as exc:
            behind.append(str(exc))

    by_commit = sorted(traffic.sent, key=lambda s: s.committed_by)
    per_fault = []
    for fault in run.faults:
        window = [
            (s.conversation_id, s.seq) for s in by_commit if fault.at <= s.started_at < fault.until
        ]
        report = delivery_report(clients, logs, seqs=window)
        total = report.total()
        reconnects = [
            r
            for c in clients
            for r in c.sockets[1:]
            if r.resume_acked_at is not None and fault.at <= r.attempt_started_at < fault.until
        ]
        gaps = []
        for c in clients:
            for previous, record in zip(c.sockets, c.sockets[1:], strict=False):
                if (
                    record.resume_acked_at is not None
                    and previous.closed_at is not None
                    and fault.at <= record.attempt_started_at < fault.until
                ):
                    gaps.append(1000 * (record.resume_acked_at - previous.closed_at))
        per_fault.append(
            {
                "fault": fault.name,
                "messages": len(window),
                "owed": total.owed,
                "lost": len(total.lost) + sum(len(v) for v in report.client_lost.values()),
                "duplicated": len(total.duplicated),
                "out_of_order": len(total.out_of_order),
                "mismatched": len(total.mismatched),
                "reconnects": len(reconnects),
                "attempt_to_resume_ack_ms": percentiles(
                    [1000 * (r.resume_seconds() or 0) for r in reconnects]
                ),
                "close_to_resume_ack_ms": percentiles(gaps),
                "examples": (total.lost + total.duplicated + total.out_of_order)[:5],
            }
        )
    whole = delivery_report(clients, logs)
    all_reconnects = [r for c in clients for r in c.sockets[1:] if r.resume_acked_at is not None]
    result = {
        "users": args.users,
        "size": args.size,
        "rate": args.rate,
        "seconds": args.seconds,
        "committed": len(traffic.sent),
        "send_failures": traffic.failed[:5],
        "achieved_rate": round(len(traffic.sent) / (ended - began), 1),
        "retried_sends": len([s for s in traffic.sent if s.attempts > 1]),
        "repeat_answers_200": len([s for s in traffic.sent if s.status == 200]),
        "faults": per_fault,
        "whole_run": {
            **whole.total().summary(),
            "client_lost": sum(len(v) for v in whole.client_lost.values()),
            "log_problems": [p for ps in whole.log_problems.values() for p in ps][:5],
            "unrecovered": whole.unrecovered,
            "schema_errors": sum(len(v) for v in whole.schema_errors.values()),
            "attempt_to_resume_ack_ms": percentiles(
                [1000 * (r.resume_seconds() or 0) for r in all_reconnects]
            ),
        },
        "behind_at_end": behind[:5],
    }
    await clients_close(clients)
    return result


def _sequencing_cost(args: argparse.Namespace, state_dir: Path) -> list[dict[str, Any]] | str:
    base = args.database_url
    if not base or not base.startswith(("postgres://", "postgresql://")):
        return "skipped: needs PostgreSQL (--database-url postgres://...)"
    database = IsolatedDatabase(base, state_dir / "seqcost")
    url = database.create()
    try:
        manage("migrate", "--noinput", env={"DATABASE_URL": url})
        out = subprocess.run(
            [
                python_bin(), "-m", "bench.faults.seqcost",
                "--database-url", url,
                "--seconds", str(args.seqcost_seconds),
                "--rounds", str(args.seqcost_rounds),
                "--writers", args.seqcost_writers,
                "--json",
            ],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
            env={**os.environ, "LOG_LEVEL": "WARNING"},
        )  # fmt: skip
        rows: list[dict[str, Any]] = json.loads(out.stdout.strip().splitlines()[-1])
        return rows
    finally:
        database.drop()


def _print(result: dict[str, Any]) -> None:
    print(
        f"\ncommitted {result['committed']} messages at {result['achieved_rate']}/s "
        f"({result['retried_sends']} retried, {result['repeat_answers_200']} answered 200)"
    )
    header = f"{'fault':<22}{'msgs':>6}{'owed':>8}{'lost':>6}{'dup':>5}{'ooo':>5}{'reconn':>8}"
    print(header + f"{'resume p50/p99 ms':>20}{'close->ack p99 ms':>19}")
    for row in result["faults"]:
        timing = row["attempt_to_resume_ack_ms"]
        gap = row["close_to_resume_ack_ms"]
        print(
            f"{row['fault']:<22}{row['messages']:>6}{row['owed']:>8}{row['lost']:>6}"
            f"{row['duplicated']:>5}{row['out_of_order']:>5}{row['reconnects']:>8}"
            f"{str(timing['p50']) + ' / ' + str(timing['p99']):>20}{gap['p99']!s:>19}"
        )
    print(f"whole run: {result['whole_run']}")
    if result["behind_at_end"]:
        print(f"behind at the end: {result['behind_at_end']}")
    cost = result.get("sequencing_cost")
    if isinstance(cost, str):
        print(f"sequencing cost: {cost}")
    elif cost:
        print("sequencing cost (PostgreSQL, same write path with and without seq + event log):")
        for row in cost:
            print(
                f"  {row['writers']} writers on {row['conversations']} conversation(s): "
                f"{row['sequenced_per_s']}/s sequenced vs {row['unsequenced_per_s']}/s "
                f"unsequenced: {row['slower_percent']}% slower"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.faults.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer users, ~1 minute")
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--size", type=int, default=3, help="users per conversation")
    parser.add_argument("--rate", type=float, default=20.0, help="messages a second")
    parser.add_argument("--seconds", type=float, default=240.0, help="of traffic")
    parser.add_argument(
        "--faults",
        default="redis restart,redis restart empty,instance SIGKILL,instance drain",
        help="comma-separated, in order",
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--seqcost-seconds", type=float, default=3.0)
    parser.add_argument("--seqcost-rounds", type=int, default=3)
    parser.add_argument("--seqcost-writers", default="1,4")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.seconds = min(args.users, 24), min(args.seconds, 60.0)
        args.seqcost_seconds, args.seqcost_rounds = 2.0, 2
    args.faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    fd_limit_raise()
    state_dir = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    cluster = Cluster(
        instances=2,
        state_dir=state_dir,
        env=BENCH_ENV,
        with_firestore=False,
        seed=False,
        database_url=args.database_url,
    )
    cluster.redis = DurableRedis(log_dir=state_dir / "redis")
    started = time.monotonic()
    try:
        cluster.start()
        result = asyncio.run(_fault_run(args, cluster))
    finally:
        cluster.stop()
    result["database"] = "postgresql" if str(args.database_url).startswith("postgres") else "sqlite"
    result["sequencing_cost"] = _sequencing_cost(args, state_dir)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    result["command"] = "python -m bench.faults.run" + (" --quick" if args.quick else "")
    _print(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults in {args.out}")
    shutil.rmtree(state_dir, ignore_errors=True)
    ok = all(r["lost"] == 0 and r["duplicated"] == 0 for r in result["faults"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
