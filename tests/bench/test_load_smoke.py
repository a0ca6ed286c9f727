"""The end-to-end load generator at a tiny size on a real 2-instance cluster.

What a user of the chat would see: every message and typing indicator sent by one
participant reaches each other participant's socket exactly once, across instances, with no
error and no socket dropped. Also checks ``bench_seed``, which the benchmark relies on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.e2e.load import LoadGenerator, accounts_assign
from bench.e2e.targets import bench_cluster, users_seed
from scripts.deployment import Cluster
from scripts.procs import ServiceUnavailable
from tests.support.services import service_unavailable

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

USERS = 21  # ten pairs and one user alone (a conversation of one has no one to tell)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    try:
        started = bench_cluster(layer="realtime", state_dir=tmp_path / "cluster", firestore=False)
    except ServiceUnavailable as exc:
        service_unavailable(str(exc))
    try:
        yield started
    finally:
        started.stop()


async def test_every_delivery_arrives_once_across_instances(cluster: Cluster) -> None:
    seeded = users_seed(cluster, users=USERS, size=2)
    sizes = sorted(len(c["participant_ids"]) for c in seeded["conversations"])
    assert len(seeded["users"]) == USERS and sizes == [1] + [2] * 10
    gen = LoadGenerator(accounts_assign(seeded, [i.ws_url for i in cluster.instances]))
    try:
        connected = await gen.connect()
        assert (connected.sockets, connected.failed) == (USERS, 0)
        # Alternate instances: each pair's two users sit on different instances.
        assert {c.account.url for c in gen.clients[:2]} == {i.ws_url for i in cluster.instances}

        stats = await gen.run_open(message_rate=30, typing_rate=30, seconds=1.5)
        tally = await gen.settle(within=10)
    finally:
        await gen.close()

    assert stats.errors == {}
    assert tally.expected >= 80  # about 90 frames, one receiver each
    assert (tally.lost, tally.unacked) == (0, 0)
    assert (tally.duplicate_events, tally.duplicate_messages) == (0, 0)
    assert gen.closed_unexpectedly == 0
