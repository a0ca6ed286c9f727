"""What an operator's dashboard shows of delivery on two real instances (docs/health.md,
"Delivery and healing metrics"): a message from the other instance is timed where it is
delivered, and one lost live while Redis is down is handed over by healing and timed from
its commit, with every message reaching the socket exactly once."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scripts.deployment import Cluster
from scripts.procs import DaphneInstance
from tests.ops.delivery_support import DELIVERY_ENV
from tests.ops.support import open_sockets, token
from tests.support.async_poll import async_wait_until
from tests.support.rest import rest_call
from tests.support.ws_client import frame_is

pytestmark = pytest.mark.cluster

MESSAGE_COUNT = ("realtime_delivery_latency_seconds_count", (("kind", "message"),))
MESSAGE_WITHIN_10S = (
    "realtime_delivery_latency_seconds_bucket",
    (("kind", "message"), ("le", "10.0")),
)
HANDED = ("realtime_heal_events_handed_total", ())
BACKLOG = ("realtime_heal_backlog", ())


def scrape(instance: DaphneInstance) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{instance.base_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def post_message(cluster: Cluster, on: DaphneInstance, body: str) -> int:
    conversation = cluster.demo["conversations"]["alice-bob"]["id"]
    status, sent = await asyncio.to_thread(
        rest_call,
        on.base_url,
        "POST",
        f"/api/conversations/{conversation}/messages",
        token=token(cluster, "bob"),
        body={"body": body},
    )
    assert status == 201, sent
    return int(sent["seq"])


async def test_cross_instance_and_healed_messages_are_timed_where_delivered(
    start_cluster,
) -> None:
    cluster = start_cluster(instances=2, firestore=False, METRICS_ACCESS="open", **DELIVERY_ENV)
    one, two = cluster.instances
    (alice,) = await open_sockets(cluster, ("alice", one))
    try:
        before = scrape(one)
        seq = await post_message(cluster, two, "across")  # bob has no socket: alice only
        await alice.recv_until(frame_is("message", seq=seq), within=10)
        after = await async_wait_until(
            lambda: (s := scrape(one))[MESSAGE_COUNT] == before[MESSAGE_COUNT] + 1 and s,
            what="the message timed on alice's instance",
        )
        assert after[MESSAGE_WITHIN_10S] == before[MESSAGE_WITHIN_10S] + 1

        await asyncio.to_thread(cluster.redis.kill)
        try:
            lost = await post_message(cluster, two, "while Redis is down")
            # Nothing crosses instances now: only healing, from the database, brings it.
            await alice.recv_until(frame_is("message", seq=lost), within=15)
            healed = await async_wait_until(
                lambda: (s := scrape(one))[MESSAGE_COUNT] == after[MESSAGE_COUNT] + 1 and s,
                what="the healed message timed",
            )
            assert healed[HANDED] >= after[HANDED] + 1
        finally:
            await asyncio.to_thread(cluster.redis.start)
        # Delivered: healing owes alice's socket nothing any more.
        await async_wait_until(lambda: scrape(one)[BACKLOG] == 0, what="an empty heal backlog")
        messages = [f["seq"] for f in alice.frames if f.get("type") == "message"]
        assert messages == [seq, lost]
    finally:
        await alice.close()
