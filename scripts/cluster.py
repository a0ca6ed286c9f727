"""A whole local deployment: Redis, the Firestore emulator, N Daphne instances, HAProxy.

See docs/operations.md. ``scripts/cluster up|down|status`` drives it from a shell and the
fault tests drive it from a fixture: the same ``Cluster`` class in both, so what the tests
prove is what a developer runs. Everything listens on 127.0.0.1. The state of a cluster
started from the command line (pids, ports, where the logs are) is kept in ``.cluster/`` so
``down`` stops exactly what ``up`` started and nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in {None, ""}:  # run as a file: make ``scripts.procs`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.procs import (
    LOOPBACK,
    REPO_ROOT,
    DaphneInstance,
    FirestoreEmulator,
    HAProxy,
    IsolatedDatabase,
    RedisServer,
    free_port,
    http_get,
    manage,
    port_open,
    wait_until,
)

HAPROXY_TEMPLATE = REPO_ROOT / "deploy" / "haproxy.cfg"
DEFAULT_STATE_DIR = REPO_ROOT / ".cluster"
# Daphne pings every socket this often; far below HAProxy's `timeout tunnel`.
DAPHNE_PING_ARGS = ["--ping-interval", "20", "--ping-timeout", "30"]


def haproxy_render(
    *,
    port: int,
    stats_port: int,
    servers: Mapping[str, int],
    check: str = "inter 1s fastinter 500ms downinter 1s fall 2 rise 1",
    template: Path = HAPROXY_TEMPLATE,
) -> str:
    """``deploy/haproxy.cfg`` for loopback: our ports, our instances, faster checks."""
    text = template.read_text()
    # HAProxy needs two descriptors per connection and refuses to start above the fd limit.
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        text = re.sub(r"(?m)^(\s*maxconn\s+)\d+", rf"\g<1>{max(256, (soft - 64) // 2)}", text)
    text = re.sub(r"(?m)^(\s*bind\s+)\*:8080\b.*$", rf"\g<1>{LOOPBACK}:{port}", text)
    text = re.sub(
        r"(?m)^(\s*bind\s+)127\.0\.0\.1:8404\b.*$", rf"\g<1>{LOOPBACK}:{stats_port}", text
    )
    text = re.sub(
        r"(?m)^(\s*default-server check )inter .*?(init-addr .*)$", rf"\g<1>{check} \g<2>", text
    )
    lines = text.splitlines()
    server_lines = [i for i, line in enumerate(lines) if re.match(r"^\s*server\s", line)]
    if not server_lines:
        raise ValueError(f"{template} has no server lines to replace")
    ours = [f"    server {name} {LOOPBACK}:{p}" for name, p in servers.items()]
    lines[server_lines[0] : server_lines[-1] + 1] = ours
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class DatabaseTemplate:
    """A migrated and seeded SQLite file that clusters copy instead of migrating again."""

    path: Path
    demo: dict[str, Any]

    @classmethod
    def build(cls, directory: Path) -> DatabaseTemplate:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "template.sqlite3"
        env = {
            "DATABASE_URL": f"sqlite:///{path}",
            "DJANGO_SETTINGS_MODULE": "realtime_project.settings",
        }
        manage("migrate", "--noinput", env=env)
        demo = json.loads(manage("seed_demo", "--json", env=env))
        return cls(path=path, demo=demo)


class Cluster:
    """Start and stop a local deployment; every piece is a ``scripts.procs`` process."""

    def __init__(
        self,
        *,
        instances: int = 3,
        state_dir: Path = DEFAULT_STATE_DIR,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        with_firestore: bool = True,
        seed: bool = True,
        database_url: str | None = None,
        check: str = "inter 1s fastinter 500ms downinter 1s fall 2 rise 1",
        template: DatabaseTemplate | None = None,
    ) -> None:
        self.instance_count = instances
        self.template = template
        self.state_dir = state_dir
        self.log_dir = state_dir / "logs"
        self.extra_env = dict(env or {})
        self.port = port or free_port()
        self.stats_port = free_port()
        self.with_firestore = with_firestore
        self.seed = seed
        self.check = check
        self.database = IsolatedDatabase(database_url, state_dir / "db")
        self.redis = RedisServer(log_dir=self.log_dir)
        self.firestore: FirestoreEmulator | None = (
            FirestoreEmulator(log_dir=self.log_dir) if with_firestore else None
        )
        self.instances: list[DaphneInstance] = []
        self.haproxy: HAProxy | None = None
        self.demo: dict[str, Any] = {}
        # Every instance signs with one key: several instances refuse to start without it.
        self.secret_key = secrets.token_urlsafe(50)

    # -- the environment every instance shares ------------------------------------------------

    def instance_env(self) -> dict[str, str]:
        env = {
            "DJANGO_SETTINGS_MODULE": "realtime_project.settings",
            "DATABASE_URL": self.database.url,
            "REDIS_URL": self.redis.url,
            "SECRET_KEY": self.secret_key,
            # Loopback over plain http: cookies that a browser sends back without TLS.
            "SECURE_COOKIES": "false",
            "LOG_FORMAT": "kv",
        }
        if self.firestore is not None:
            env["FIRESTORE_PROJECT_ID"] = self.firestore.project_id
            env["FIRESTORE_EMULATOR_HOST"] = self.firestore.host
        else:
            env.pop("FIRESTORE_EMULATOR_HOST", None)
        env.update(self.extra_env)
        return env

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Cluster:
        """Start everything and wait until HAProxy sees every instance up."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.redis.start()
            # The emulator (a JVM) starts while migrations run.
            with ThreadPoolExecutor(max_workers=1) as pool:
                emulator = pool.submit(self.firestore.start) if self.firestore else None
                self.database.create()
                if self.template is not None and self.database.url.startswith("sqlite:///"):
                    shutil.copyfile(self.template.path, self.database.url[len("sqlite:///") :])
                    self.demo = dict(self.template.demo)
                else:
                    manage("migrate", "--noinput", env=self.instance_env())
                    if self.seed:
                        out = manage("seed_demo", "--json", env=self.instance_env())
                        self.demo = json.loads(out)
                if emulator is not None:
                    emulator.result()
            for index in range(self.instance_count):
                self.instances.append(self._new_instance(f"instance-{index + 1}"))
            self._start_instances(self.instances)
            self.haproxy = HAProxy(
                config_text=self.haproxy_config(),
                port=self.port,
                stats_port=self.stats_port,
                log_dir=self.log_dir,
            )
            self.haproxy.start()
            self.wait_balancer(up=[i.instance_id for i in self.instances], timeout=15)
        except BaseException:
            self.stop()
            raise
        return self

    def _new_instance(self, instance_id: str) -> DaphneInstance:
        return DaphneInstance(
            instance_id=instance_id,
            env=self.instance_env(),
            log_dir=self.log_dir,
            extra_args=DAPHNE_PING_ARGS,
        )

    @staticmethod
    def _start_instances(instances: list[DaphneInstance]) -> None:
        # Spawn all, then wait for each: Django loads in parallel on every core.
        with ThreadPoolExecutor(max_workers=max(1, len(instances))) as pool:
            for future in [pool.submit(i.start) for i in instances]:
                future.result()

    def haproxy_config(self) -> str:
        return haproxy_render(
            port=self.port,
            stats_port=self.stats_port,
            servers={i.instance_id: i.port for i in self.instances},
            check=self.check,
        )

    def stop(self) -> None:
        """Stop everything this object started (in reverse order); safe to call twice."""
        if self.haproxy is not None:
            self.haproxy.stop(timeout=5)
        # SIGTERM to all first so they drain side by side, not one after another.
        for instance in self.instances:
            instance.signal(signal.SIGTERM)
        for instance in self.instances:
            instance.stop(timeout=10)
        if self.firestore is not None:
            self.firestore.stop(timeout=10)
        self.redis.stop(timeout=5)
        with contextlib.suppress(Exception):
            self.database.drop()

    def restart_instance(self, instance: DaphneInstance) -> DaphneInstance:
        """Start a stopped (or crashed) instance again, same id and port."""
        instance.stop(timeout=5)
        instance.start()
        return instance

    # -- what the balancer sees ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/ws/"

    def instance(self, instance_id: str) -> DaphneInstance:
        return next(i for i in self.instances if i.instance_id == instance_id)

    def balancer_states(self) -> dict[str, str]:
        return self.haproxy.server_states() if self.haproxy else {}

    def wait_balancer(
        self, *, up: list[str] | None = None, down: list[str] | None = None, timeout: float = 10
    ) -> dict[str, str]:
        """Wait until HAProxy reports ``up`` as UP and ``down`` as not UP."""

        def settled() -> dict[str, str] | None:
            states = self.balancer_states()
            ok = all(states.get(name) == "UP" for name in up or []) and all(
                states.get(name) not in {None, "UP"} for name in down or []
            )
            return states if ok else None

        result: dict[str, str] = wait_until(
            settled, timeout=timeout, interval=0.1, what=f"HAProxy: up={up} down={down}"
        )
        return result

    # -- state for the command line -----------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ws_url": self.ws_url,
            "haproxy": {
                "port": self.port,
                "stats": f"http://{LOOPBACK}:{self.stats_port}/stats",
                "pid": self.haproxy.pid if self.haproxy else None,
            },
            "redis": {"url": self.redis.url, "pid": self.redis.pid},
            "firestore": (
                {"host": self.firestore.host, "pid": self.firestore.pid} if self.firestore else None
            ),
            "database": self.database.url,
            "database_name": self.database.name,
            "database_base_url": self.database.base_url,
            "instances": [
                {"instance_id": i.instance_id, "url": i.base_url, "pid": i.pid}
                for i in self.instances
            ],
            "logs": str(self.log_dir),
        }

    def save_state(self) -> Path:
        path = self.state_dir / "state.json"
        path.write_text(json.dumps(self.describe(), indent=2) + "\n")
        if self.demo:
            (self.state_dir / "demo.json").write_text(json.dumps(self.demo, indent=2) + "\n")
        return path


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
    pids.append(("redis", int(state["redis"]["pid"])))
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
    cluster = Cluster(
        instances=args.instances,
        state_dir=state_dir,
        port=port,
        with_firestore=not args.no_firestore,
        database_url=os.environ.get("DATABASE_URL"),
    )
    cluster.start()
    cluster.save_state()
    info = cluster.describe()
    print(f"HAProxy        {info['url']}  (WebSocket {info['ws_url']})")
    print(f"HAProxy stats  {info['haproxy']['stats']}")
    for instance in info["instances"]:
        print(f"{instance['instance_id']:<14} {instance['url']}  pid {instance['pid']}")
    print(f"Redis          {info['redis']['url']}")
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
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop what `up` started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="what runs, and what HAProxy sees").set_defaults(func=cmd_status)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
