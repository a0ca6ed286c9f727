"""What the benchmark measures: the local cluster (either layer) and a bare Daphne echo.

Both are the project's own process managers (scripts/cluster.py, scripts/procs.py), so the
instances run exactly as ``scripts/cluster up`` runs them: same Daphne arguments, same backlog.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

from scripts.deployment import Cluster
from scripts.procs import DaphneInstance, manage

PUBSUB_BACKEND = "channels_redis.pubsub.RedisPubSubChannelLayer"
LAYERS = {"realtime": "", "pubsub": PUBSUB_BACKEND}

# Settings of the benchmark cluster that differ from the defaults, and why.
BENCH_ENV = {
    # Stopping the cluster at the end should not wait for a load balancer to notice.
    "DRAIN_DELAY_SECONDS": "0",
    "DRAIN_BATCH_SIZE": "1000",
    "LOG_LEVEL": "WARNING",
    # Background ticks that would land inside the window of a lone connect (whose Redis round
    # trips are counted): deadline claims every 30 s instead of 1 s. The heartbeat (20 s) and
    # HAProxy's check (30 s, as in deploy/haproxy.cfg) are already that slow in production.
    "PRESENCE_DEADLINE_POLL_SECONDS": "30",
}
BENCH_CHECK = "inter 30s fastinter 1s downinter 1s fall 2 rise 1"
# ``--via-haproxy``: HAProxy must see a killed instance within a few seconds, as it would with
# production's own checks, or every comeback is first sent to the dead instance and retried.
BALANCED_CHECK = "inter 1s fastinter 500ms downinter 1s fall 2 rise 1"


def fd_limit_raise() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def bench_cluster(
    *,
    layer: str,
    state_dir: Path,
    instances: int = 2,
    firestore: bool = True,
    env: dict[str, str] | None = None,
    database_url: str | None = None,
    check: str = BENCH_CHECK,
) -> Cluster:
    """A started cluster whose instances use ``layer`` ("realtime" or "pubsub")."""
    extra = {**BENCH_ENV, **(env or {})}
    if LAYERS[layer]:
        extra["CHANNEL_LAYER_BACKEND"] = LAYERS[layer]
    cluster = Cluster(
        instances=instances,
        state_dir=state_dir,
        env=extra,
        with_firestore=firestore,
        seed=False,
        check=check,
        database_url=database_url,
    )
    return cluster.start()


def users_seed(cluster: Cluster, *, users: int, size: int) -> dict[str, Any]:
    """``bench_seed``: users with tokens and conversations of ``size`` consecutive users."""
    out = manage(
        "bench_seed",
        "--users",
        str(users),
        "--size",
        str(size),
        "--json",
        env=cluster.instance_env(),
    )
    seeded: dict[str, Any] = json.loads(out)
    return seeded


class EchoDaphne(DaphneInstance):
    """Daphne serving bench/e2e/echo_asgi.py with an instance's arguments."""

    def argv(self) -> list[str]:
        return [*super().argv()[:-1], "bench.e2e.echo_asgi:application"]

    def _ready(self) -> bool:
        self._check_started()
        from scripts.procs import http_get, port_open

        if not port_open(self.port):
            return False
        status, _ = http_get(f"{self.base_url}/", timeout=2.0)
        return status == 200


def echo_start(*, log_dir: Path, env: dict[str, str] | None = None) -> EchoDaphne:
    from scripts.deployment import DAPHNE_PING_ARGS

    echo = EchoDaphne(instance_id="echo", log_dir=log_dir, extra_args=DAPHNE_PING_ARGS, env=env)
    echo.start()
    return echo
