"""Webhooks across real instances: a sender SIGKILLed mid-call, Redis stopped.

Two Daphne instances share one database and send to one local receiver. Every message owes
a ``message.offline`` (nobody else has a socket); the ledger is the conversation's seqs: each
must arrive at least once (duplicates are allowed and counted), none may be missing.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.procs import DaphneInstance
from tests.support.async_poll import async_wait_until
from tests.support.cluster import E2ECluster, e2e_cluster_start
from tests.support.rest import rest_call
from tests.support.webhook_receiver import WebhookReceiver
from tests.webhooks.conftest import SECRET

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

WEBHOOK_ENV = {
    "WEBHOOK_SECRET": SECRET,
    "WEBHOOK_TIMEOUT_SECONDS": "2",
    "WEBHOOK_LEASE_SECONDS": "3",
    "WEBHOOK_BACKOFF_BASE_SECONDS": "0.2",
    "WEBHOOK_BACKOFF_MAX_SECONDS": "1",
    "WEBHOOK_POLL_SECONDS": "0.1",
}


@pytest.fixture(scope="module")
def hooked(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[E2ECluster, WebhookReceiver]]:
    receiver = WebhookReceiver(secret=SECRET).start()
    started = e2e_cluster_start(
        state_dir=tmp_path_factory.mktemp("webhooks-cluster"),
        env={**WEBHOOK_ENV, "WEBHOOK_URLS": receiver.url},
    )
    try:
        yield started, receiver
    finally:
        started.cluster.stop()
        receiver.stop()


@pytest.fixture
def cluster(hooked: tuple[E2ECluster, WebhookReceiver]) -> E2ECluster:
    hooked[0].ensure_up()
    return hooked[0]


@pytest.fixture
def receiver(hooked: tuple[E2ECluster, WebhookReceiver]) -> Iterator[WebhookReceiver]:
    received = hooked[1]
    received.status, received.hang = 200, False
    yield received
    received.unhang()


def offline_seqs(receiver: WebhookReceiver, conversation_id: str) -> Counter[int]:
    return Counter(
        e["seq"]
        for e in receiver.accepted_events("message.offline")
        if e["conversation_id"] == conversation_id
    )


async def send(cluster: E2ECluster, on: DaphneInstance, conversation_id: str, n: int) -> int:
    code, body = await asyncio.to_thread(
        rest_call,
        on.base_url,
        "POST",
        f"/api/conversations/{conversation_id}/messages",
        token=cluster.users["alice"].token,
        body={"body": f"m{n}"},
    )
    assert code == 201, (code, body)
    return int(body["seq"])


def socket_owner(instances: list[DaphneInstance], local_port: int) -> DaphneInstance | None:
    """The instance whose process holds the client end of a connection from ``local_port``."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == local_port:
                inodes.add(fields[9])
    for instance in instances:
        if not instance.alive():
            continue
        for fd in Path(f"/proc/{instance.pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return instance
    return None


async def test_a_sender_killed_mid_call_leaves_its_batch_to_the_other(cluster, receiver):
    conversation = cluster.conversations["alice-bob-carol"]
    before = offline_seqs(receiver, conversation)
    receiver.hang = True
    seqs = [await send(cluster, (cluster.a, cluster.b)[n % 2], conversation, n) for n in range(20)]
    await async_wait_until(lambda: receiver.calls, timeout=20, what="a call held by the receiver")
    owners = [socket_owner([cluster.a, cluster.b], c.client_port) for c in list(receiver.calls)]
    victim = next(o for o in owners if o is not None)
    victim.kill()
    receiver.unhang()

    def all_arrived() -> bool:
        got = offline_seqs(receiver, conversation) - before
        return set(seqs) <= set(got)

    await async_wait_until(all_arrived, timeout=60, what="every message.offline owed")
    got = offline_seqs(receiver, conversation) - before
    missing = set(seqs) - set(got)
    duplicated = sum(n - 1 for n in got.values())
    print(f"sigkill: owed {len(seqs)}, missing {len(missing)}, duplicated {duplicated}")
    assert missing == set()


async def test_redis_stopped_delays_no_webhook(cluster, receiver):
    conversation = cluster.conversations["alice-bob-carol"]
    before = offline_seqs(receiver, conversation)
    cluster.cluster.redis.stop()
    try:
        seqs = [await send(cluster, cluster.a, conversation, n) for n in range(5)]

        def all_arrived() -> bool:
            return set(seqs) <= set(offline_seqs(receiver, conversation) - before)

        await async_wait_until(all_arrived, timeout=30, what="webhooks with Redis down")
    finally:
        cluster.cluster.redis.start()
    events = [
        e
        for e in receiver.accepted_events("message.offline")
        if e["conversation_id"] == conversation and e["seq"] in seqs
    ]
    assert {tuple(e["user_ids"]) for e in events} == {
        tuple(sorted([cluster.users["bob"].id, cluster.users["carol"].id], key=int))
    }
