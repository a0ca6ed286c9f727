"""A real cluster for cross-instance tests: Redis, the Firestore emulator, two Daphne instances.

Built on ``scripts.deployment.Cluster`` (what ``scripts/cluster up`` runs) with short intervals so
leases and grace periods lapse within seconds. Use it from a test module::

    # conftest.py: from tests.support.cluster import cluster, e2e_cluster, sockets

    async def test_x(e2e_cluster: E2ECluster, sockets) -> None:
        alice = await sockets.open("alice", on=e2e_cluster.a)

``e2e_cluster`` is module-scoped (starting it costs a few seconds); tests keep to their own
users or wait for the state they need, and ``e2e_cluster.ensure_up()`` (run before every test
by the ``cluster`` fixture) brings back any instance or emulator a test stopped. ``sockets``
closes every socket a test opened.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripts.deployment import Cluster
from scripts.procs import DaphneInstance, ServiceUnavailable
from tests.support.demo_user import DemoUser
from tests.support.rest import rest_call
from tests.support.services import service_unavailable
from tests.support.ws_client import WsClient, frame_is

# Short enough that a lease or a grace period lapses within seconds, long enough for a
# 2-core machine running two instances, Redis and a JVM.
E2E_ENV = {
    "HEARTBEAT_INTERVAL_SECONDS": "0.5",
    "CONNECTION_TTL_SECONDS": "2",
    "PRESENCE_GRACE_SECONDS": "1.5",
    "REDIS_SOCKET_TIMEOUT_SECONDS": "1",
    "REDIS_CONNECT_TIMEOUT_SECONDS": "0.5",
    "HEALTH_TIMEOUT_SECONDS": "0.5",
    "HEALTH_CACHE_SECONDS": "0.1",
    "DRAIN_DELAY_SECONDS": "0",
    # Tests place sockets on instances directly; only the rebalancing test wants them moved.
    "REBALANCE_CLOSE_RATE": "0",
    "LOG_LEVEL": "WARNING",
}


@dataclass(frozen=True)
class PresenceDocument:
    status: str
    last_seen: str | None
    updated_at: str | None
    update_time: str  # the emulator's own write time: changes on every write


class E2ECluster:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        demo = cluster.demo
        self.users = {
            name: DemoUser(name, info["id"], info["token"]) for name, info in demo["users"].items()
        }
        self.conversations = {title: c["id"] for title, c in demo["conversations"].items()}

    # -- pieces -------------------------------------------------------------------------------

    @property
    def a(self) -> DaphneInstance:
        return self.cluster.instances[0]

    @property
    def b(self) -> DaphneInstance:
        return self.cluster.instances[1]

    @property
    def collection(self) -> str:
        return self.cluster.instance_env().get("PRESENCE_COLLECTION", "users")

    def user(self, name: str) -> DemoUser:
        return self.users[name]

    def ensure_up(self) -> None:
        """Bring back whatever an earlier test stopped or killed."""
        firestore = self.cluster.firestore
        if firestore is not None and not firestore.alive():
            firestore.start()
        for instance in self.cluster.instances:
            if not instance.alive():
                self.cluster.restart_instance(instance)

    # -- talking to it ------------------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        *,
        user: str,
        on: DaphneInstance,
        body: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """One REST call as ``user`` to one instance: (status, decoded JSON body)."""
        return rest_call(on.base_url, method, path, token=self.users[user].token, body=body)

    def presence_document(self, user_id: str) -> PresenceDocument | None:
        """The user's presence as stored, read straight from the emulator's REST API."""
        firestore = self.cluster.firestore
        assert firestore is not None
        url = (
            f"http://{firestore.host}/v1/projects/{firestore.project_id}"
            f"/databases/(default)/documents/{self.collection}/{user_id}"
        )
        request = urllib.request.Request(url, headers={"Authorization": "Bearer owner"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                doc = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        fields = doc.get("fields", {})

        def value(name: str) -> str | None:
            field = fields.get(name) or {}
            found = field.get("stringValue", field.get("timestampValue"))
            return str(found) if found is not None else None

        return PresenceDocument(
            status=str(value("status")),
            last_seen=value("last_seen"),
            updated_at=value("updated_at"),
            update_time=str(doc["updateTime"]),
        )


def e2e_cluster_start(*, state_dir: Path, env: dict[str, str] | None = None) -> E2ECluster:
    """Two instances over their own Redis, Firestore emulator and database, seeded."""
    cluster = Cluster(
        instances=2,
        state_dir=state_dir,
        env={**E2E_ENV, **(env or {})},
        with_firestore=True,
        database_url=os.environ.get("DATABASE_URL"),
    )
    try:
        cluster.start()
    except ServiceUnavailable as exc:
        service_unavailable(str(exc))
    return E2ECluster(cluster)


@pytest.fixture(scope="module")
def e2e_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ECluster]:
    started = e2e_cluster_start(state_dir=tmp_path_factory.mktemp("e2e-cluster"))
    try:
        yield started
    finally:
        started.cluster.stop()


@pytest.fixture
def cluster(e2e_cluster: E2ECluster) -> E2ECluster:
    """The module's cluster with every piece running."""
    e2e_cluster.ensure_up()
    return e2e_cluster


class Sockets:
    """Opens sockets for one test and closes them all afterwards."""

    def __init__(self, cluster: E2ECluster) -> None:
        self.cluster = cluster
        self.opened: list[WsClient] = []

    async def open(self, name: str, *, on: DaphneInstance) -> WsClient:
        """A socket of user ``name`` on one instance, past its ``connected`` frame."""
        client = await WsClient.open(on.ws_url, token=self.cluster.users[name].token)
        self.opened.append(client)
        await client.recv_until(frame_is("connected"))
        return client

    async def close_all(self) -> None:
        for client in self.opened:
            # A socket on a killed instance is already gone.
            with contextlib.suppress(Exception):
                await client.close()


@pytest.fixture
async def sockets(cluster: E2ECluster) -> AsyncIterator[Sockets]:
    opened = Sockets(cluster)
    yield opened
    await opened.close_all()
