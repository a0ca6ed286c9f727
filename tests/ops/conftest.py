"""A real local cluster per test: the ``scripts.deployment.Cluster`` that ``scripts/cluster up``
runs, with short intervals so faults show within seconds. Loopback only, every process
stopped afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.deployment import Cluster, DatabaseTemplate
from scripts.procs import REPO_ROOT, ServiceUnavailable
from tests.support.services import service_unavailable

# Short enough for faults to show in seconds, long enough for a 2-core machine under load.
FAST_ENV = {
    "HEARTBEAT_INTERVAL_SECONDS": "0.5",
    "CONNECTION_TTL_SECONDS": "3",
    "PRESENCE_GRACE_SECONDS": "6",
    "HEALTH_TIMEOUT_SECONDS": "0.5",
    "HEALTH_CACHE_SECONDS": "0.1",
    "REDIS_SOCKET_TIMEOUT_SECONDS": "1",
    "REDIS_CONNECT_TIMEOUT_SECONDS": "0.5",
    "DRAIN_DELAY_SECONDS": "1.5",
    "DRAIN_BATCH_SIZE": "50",
}

MEASUREMENTS_PATH = REPO_ROOT / "artifacts" / "ops_measurements.json"


@pytest.fixture(scope="session")
def db_template(tmp_path_factory: pytest.TempPathFactory) -> DatabaseTemplate:
    """Migrated and seeded once; each cluster copies it (seeding hashes passwords: slow)."""
    return DatabaseTemplate.build(tmp_path_factory.mktemp("db-template"))


@pytest.fixture
def start_cluster(
    tmp_path: Path, db_template: DatabaseTemplate
) -> Iterator[Callable[..., Cluster]]:
    started: list[Cluster] = []

    def start(*, instances: int = 2, firestore: bool = True, **env: str) -> Cluster:
        cluster = Cluster(
            instances=instances,
            state_dir=tmp_path / f"cluster-{len(started)}",
            env={**FAST_ENV, **env},
            with_firestore=firestore,
            template=db_template,
        )
        started.append(cluster)
        try:
            cluster.start()
        except ServiceUnavailable as exc:
            service_unavailable(str(exc))
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture(scope="session")
def measurements() -> Iterator[dict[str, Any]]:
    """Timings the fault tests measured; written to artifacts/ for docs/operations.md."""
    found: dict[str, Any] = {}
    yield found
    if found:
        MEASUREMENTS_PATH.parent.mkdir(parents=True, exist_ok=True)
        previous: dict[str, Any] = {}
        if MEASUREMENTS_PATH.exists():
            previous = json.loads(MEASUREMENTS_PATH.read_text())
        MEASUREMENTS_PATH.write_text(json.dumps({**previous, **found}, indent=2) + "\n")
