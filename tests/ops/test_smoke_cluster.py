"""The cluster the fault tests use comes up whole, and HAProxy spreads sockets over it."""

from __future__ import annotations

import pytest

from tests.ops.support import health, open_socket

pytestmark = pytest.mark.cluster


async def test_cluster_serves_sockets_on_every_instance_through_haproxy(start_cluster) -> None:
    cluster = start_cluster(instances=2)
    assert cluster.balancer_states() == {"instance-1": "UP", "instance-2": "UP"}
    for instance in cluster.instances:
        status, body = health(instance.base_url)
        assert status == 200, body
        assert body["instance_id"] == instance.instance_id
        assert body["checks"]["redis"]["status"] == "up"
    seen = set()
    sockets = []
    try:
        for name in ("alice", "bob", "carol", "alice"):
            client, hello = await open_socket(cluster, name, cluster.ws_url)
            sockets.append(client)
            seen.add(hello["instance_id"])
    finally:
        for client in sockets:
            await client.close()
    assert seen == {"instance-1", "instance-2"}
