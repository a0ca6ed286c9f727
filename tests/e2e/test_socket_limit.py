"""MAX_SOCKETS_PER_USER on real Daphne instances: exact under a stampede, on each topology.

40 sockets of one user connect at the same moment, half to each instance, with a limit of 20:
exactly 20 get ``connected`` and the other 20 are closed with 4429, on one Redis and on a
Redis Cluster (the limit is one script on the user's slot, docs/registry.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import websockets

from realtime_project.close_codes import WS_4429_TOO_MANY
from scripts.deployment import Cluster, RedisKind
from tests.support.cluster import E2E_ENV
from tests.support.services import service_running
from tests.support.ws_client import WsClient, frame_is

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

LIMIT = 20


@pytest.fixture(scope="module", params=["single", "cluster"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    kind: RedisKind = request.param
    cluster = Cluster(
        instances=2,
        state_dir=tmp_path_factory.mktemp(f"limit-{kind}"),
        env={**E2E_ENV, "MAX_SOCKETS_PER_USER": str(LIMIT)},
        with_firestore=False,
        redis=kind,
    )
    with service_running(cluster):
        yield cluster


async def test_forty_at_once_with_a_limit_of_twenty_admit_exactly_twenty(
    deployment: Cluster,
) -> None:
    token = deployment.demo["users"]["alice"]["token"]
    urls = [instance.ws_url for instance in deployment.instances]

    async def connect(n: int) -> tuple[int, WsClient | int]:
        client = await WsClient.open(urls[n % 2], token=token, within=15)
        try:
            frame = await client.recv_until(frame_is("connected"), within=15)
        except websockets.ConnectionClosed:
            return n % 2, client.close_code or 0
        assert frame["user_id"] == str(deployment.demo["users"]["alice"]["id"])
        return n % 2, client

    results = await asyncio.gather(*(connect(n) for n in range(2 * LIMIT)))
    admitted = [(i, r) for i, r in results if isinstance(r, WsClient)]
    refused = [r for _, r in results if not isinstance(r, WsClient)]
    try:
        assert len(admitted) == LIMIT
        assert refused == [WS_4429_TOO_MANY] * LIMIT
        # Both instances admitted some: the limit held across them, not per instance.
        assert {i for i, _ in admitted} == {0, 1}
        assert all(client.is_open for _, client in admitted)
    finally:
        await asyncio.gather(*(client.close() for _, client in admitted))
