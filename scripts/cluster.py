"""The command line for a local deployment: ``scripts/cluster up|down|status``.

See docs/operations.md. The deployment itself is ``scripts.deployment.Cluster``, which the
fault tests build from a fixture too, so what the tests prove is what a developer runs. The
state of a cluster started from the command line (pids, ports, where the logs are) is kept
in ``.cluster/`` so ``down`` stops exactly what ``up`` started and nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if __package__ in {None, ""}:  # run as a file: make ``scripts.procs`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.deployment import DEFAULT_STATE_DIR, Cluster, RedisKind
from scripts.procs import IsolatedDatabase, http_get, port_open

# -- the command line --------------------------------------------------------------------------


def _load_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / "state.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _pids(state: Mapping[str, Any]) -> list[tuple[str, int]]:
    pids: list[tuple[str, int]] = []
    if state.get("haproxy", {}).get("pid"):
        pids.append(("haproxy", int(state["haproxy"]["pid"])))
    for instance in state.get("instances", []):
        pids.append((instance["instance_id"], int(instance["pid"])))
    if state.get("firestore"):
        pids.append(("firestore", int(state["firestore"]["pid"])))
    redis = state["redis"]
    for pid in redis.get("pids") or [redis["pid"]]:
        pids.append(("redis", int(pid)))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not alive.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            return False
    return True


def _is_session_leader(pid: int) -> bool:
    """Our processes each lead their own session; a recycled pid almost never does."""
    try:
        return os.getsid(pid) == pid
    except OSError:
        return False


def _stop_pids(pids: list[int], timeout: float) -> None:
    """SIGTERM every process group (instances drain side by side), SIGKILL what outlives it."""
    ours = [pid for pid in pids if _alive(pid) and _is_session_leader(pid)]
    for pid in ours:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in ours) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in ours:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def cmd_up(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    existing = _load_state(state_dir)
    if existing and any(_alive(pid) for _, pid in _pids(existing)):
        print(f"a cluster is already running (see {state_dir / 'state.json'}); "
              "`scripts/cluster down` first", file=sys.stderr)  # fmt: skip
        return 1
    if state_dir.exists():
        shutil.rmtree(state_dir)
    port = args.port if args.port and not port_open(args.port) else None
    redis: RedisKind = "single"
    if args.redis_cluster:
        redis = "cluster"
    elif args.sentinel:
        redis = "sentinel"
    cluster = Cluster(
        instances=args.instances,
        state_dir=state_dir,
        port=port,
        with_firestore=not args.no_firestore,
        database_url=os.environ.get("DATABASE_URL"),
        redis=redis,
    )
    cluster.start()
    cluster.save_state()
    info = cluster.describe()
    print(f"HAProxy        {info['url']}  (WebSocket {info['ws_url']})")
    print(f"HAProxy stats  {info['haproxy']['stats']}")
    for instance in info["instances"]:
        print(f"{instance['instance_id']:<14} {instance['url']}  pid {instance['pid']}")
    for key, value in cluster.redis_env().items():
        print(f"Redis          {key}={value}")
    if info["firestore"]:
        print(f"Firestore      {info['firestore']['host']} (emulator)")
    print(f"Database       {info['database']}")
    print(f"Logs           {info['logs']}")
    if cluster.demo:
        print(f"Demo users     alice, bob, carol, admin (password demo-password); "
              f"tokens in {state_dir / 'demo.json'}")  # fmt: skip
    print("Stop it with   scripts/cluster down")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    state = _load_state(state_dir)
    if state is None:
        print("no cluster state found; nothing to stop")
        return 0
    pids = _pids(state)
    # The balancer first, then the instances (they drain), then what they depend on.
    _stop_pids([pid for name, pid in pids if name == "haproxy"], timeout=5)
    _stop_pids([pid for name, pid in pids if name not in {"haproxy", "redis", "firestore"}], 15)
    _stop_pids([pid for name, pid in pids if name in {"redis", "firestore"}], timeout=10)
    for name, pid in pids:
        print(f"stopped {name} (pid {pid})")
    base_url = state.get("database_base_url")
    if base_url:
        db = IsolatedDatabase(base_url, state_dir / "db")
        db.name = state["database_name"]
        with contextlib.suppress(Exception):
            db.drop()
    (state_dir / "state.json").unlink(missing_ok=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = _load_state(args.state_dir)
    if state is None:
        print("no cluster (scripts/cluster up --instances 3)")
        return 1
    for name, pid in _pids(state):
        print(f"{name:<14} pid {pid:<8} {'running' if _alive(pid) else 'stopped'}")
    for instance in state["instances"]:
        try:
            code, body = http_get(f"{instance['url']}/api/health", timeout=2)
            health = json.loads(body).get("status", "?")
        except (OSError, ValueError):
            code, health = 0, "unreachable"
        print(f"{instance['instance_id']:<14} health {code} {health}")
    stats_url = state["haproxy"]["stats"]
    try:
        code, body = http_get(f"{stats_url};csv", timeout=2)
        for line in body.decode().splitlines()[1:]:
            cols = line.split(",")
            if cols[0] == "instances" and cols[1] not in {"FRONTEND", "BACKEND"}:
                print(f"HAProxy sees   {cols[1]:<14} {cols[17]}")
    except OSError:
        print("HAProxy        unreachable")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start Redis, Firestore emulator, N instances and HAProxy")
    up.add_argument("--instances", type=int, default=3)
    up.add_argument("--port", type=int, default=8000, help="HAProxy's port (a free one if taken)")
    up.add_argument("--no-firestore", action="store_true", help="presence kept in each process")
    kind = up.add_mutually_exclusive_group()
    kind.add_argument(
        "--redis-cluster", action="store_true", help="a Redis Cluster: 3 masters, 3 replicas"
    )
    kind.add_argument(
        "--sentinel", action="store_true", help="a Redis master, a replica and 3 Sentinels"
    )
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop what `up` started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="what runs, and what HAProxy sees").set_defaults(func=cmd_status)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
