"""A whole local deployment as a library: Redis, the Firestore emulator, N Daphne, HAProxy.

See docs/operations.md. ``scripts/cluster`` (the command line, ``scripts/cluster.py``) and the
tests' fixtures both build this ``Cluster``, so what the tests prove is what a developer runs.
Everything listens on 127.0.0.1. Redis is one server, a Redis Cluster (``redis="cluster"``:
3 masters, 3 replicas) or a Sentinel set (``redis="sentinel"``); the instances get the
settings for whichever it is (docs/topology.md).
"""

from __future__ import annotations

import contextlib
import json
import re
import resource
import secrets
import shutil
import signal
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from scripts.procs import (
    LOOPBACK,
    REPO_ROOT,
    DaphneInstance,
    FirestoreEmulator,
    HAProxy,
    IsolatedDatabase,
    RedisClusterSet,
    RedisSentinelSet,
    RedisServer,
    free_port,
    manage,
    wait_until,
)

RedisKind = Literal["single", "cluster", "sentinel"]

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
        redis: RedisKind = "single",
        balancer_env: Mapping[str, str] | None = None,
    ) -> None:
        self.instance_count = instances
        # HAProxy's environment (``CONNECT_RATE_PER_INSTANCE``), apart from the instances'.
        self.balancer_env = dict(balancer_env or {})
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
        self.redis_kind: RedisKind = redis
        self.redis = RedisServer(log_dir=self.log_dir)
        self.redis_cluster: RedisClusterSet | None = None
        self.redis_sentinels: RedisSentinelSet | None = None
        if redis == "cluster":
            self.redis_cluster = RedisClusterSet(log_dir=self.log_dir / "redis-cluster")
        elif redis == "sentinel":
            self.redis_sentinels = RedisSentinelSet(log_dir=self.log_dir / "redis-sentinel")
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
            "SECRET_KEY": self.secret_key,
            # Loopback over plain http: cookies that a browser sends back without TLS.
            "SECURE_COOKIES": "false",
            "LOG_FORMAT": "kv",
            **self.redis_env(),
        }
        if self.firestore is not None:
            env["FIRESTORE_PROJECT_ID"] = self.firestore.project_id
            env["FIRESTORE_EMULATOR_HOST"] = self.firestore.host
        else:
            env.pop("FIRESTORE_EMULATOR_HOST", None)
        env.update(self.extra_env)
        return env

    def redis_env(self) -> dict[str, str]:
        """The settings that point an instance at this cluster's Redis, whichever kind."""
        if self.redis_cluster is not None:
            return {"REDIS_URL": self._cluster_seeds, "REDIS_CLUSTER": "true"}
        if self.redis_sentinels is not None:
            return {
                "REDIS_SENTINELS": self.redis_sentinels.addresses,
                "REDIS_SENTINEL_MASTER": self.redis_sentinels.MASTER_NAME,
            }
        return {"REDIS_URL": self.redis.url}

    @property
    def _cluster_seeds(self) -> str:
        assert self.redis_cluster is not None
        # Every node is a seed: whichever is down, another answers.
        return ",".join(node.url.removesuffix("/0") for node in self.redis_cluster.nodes)

    def _start_redis(self) -> None:
        if self.redis_cluster is not None:
            self.redis_cluster.start()
        elif self.redis_sentinels is not None:
            self.redis_sentinels.start()
        else:
            self.redis.start()

    def _stop_redis(self) -> None:
        if self.redis_cluster is not None:
            self.redis_cluster.stop()
        elif self.redis_sentinels is not None:
            self.redis_sentinels.stop()
        else:
            self.redis.stop(timeout=5)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Cluster:
        """Start everything and wait until HAProxy sees every instance up."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_redis()
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
                env=self.balancer_env,
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
        self._stop_redis()
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
            "redis": self._describe_redis(),
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

    def _describe_redis(self) -> dict[str, Any]:
        if self.redis_cluster is not None:
            return {
                "kind": "cluster",
                "url": self._cluster_seeds,
                "pids": [node.pid for node in self.redis_cluster.nodes],
            }
        if self.redis_sentinels is not None:
            sentinels = self.redis_sentinels
            processes = [sentinels.master, sentinels.replica, *sentinels.sentinels]
            return {
                "kind": "sentinel",
                "sentinels": sentinels.addresses,
                "pids": [process.pid for process in processes],
            }
        return {"kind": "single", "url": self.redis.url, "pid": self.redis.pid}

    def save_state(self) -> Path:
        path = self.state_dir / "state.json"
        path.write_text(json.dumps(self.describe(), indent=2) + "\n")
        if self.demo:
            (self.state_dir / "demo.json").write_text(json.dumps(self.demo, indent=2) + "\n")
        return path
