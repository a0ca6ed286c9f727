"""What the delivery fault tests share: settings, demo clients and senders, the final check.

Each test commits durable events at a fixed rate (``tests.support.delivery_traffic``) while
it injects one fault, then reads the conversations' event logs back by REST and judges every
socket of every ``DeliveryClient`` against them (``tests.support.delivery_ledger``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from scripts.deployment import Cluster
from scripts.procs import DaphneInstance
from tests.ops.support import token
from tests.support.async_poll import async_wait_until
from tests.support.delivery_client import DeliveryClient
from tests.support.delivery_ledger import (
    CommittedLog,
    DeliveryReport,
    assert_exactly_once,
    committed_logs,
    last_seqs,
)
from tests.support.delivery_traffic import Sender, Traffic

# Traffic well above a person's typing speed, so the per-user limits must not refuse it;
# healing checks twice a second, so a missed event shows within the test's deadlines.
DELIVERY_ENV = {
    "RATE_LIMIT_FRAMES_PER_SECOND": "1000",
    "RATE_LIMIT_BURST": "1000",
    "HEAL_INTERVAL_SECONDS": "0.5",
    "LOG_LEVEL": "WARNING",
}

# Healing is promised "within a few seconds" of Redis coming back; a resume within one
# round trip of the query.
CATCH_UP_SECONDS = 10.0


def conversations_of(cluster: Cluster, name: str) -> list[str]:
    uid = str(cluster.demo["users"][name]["id"])
    return [
        str(c["id"])
        for c in cluster.demo["conversations"].values()
        if uid in {str(p) for p in c["participant_ids"]}
    ]


def all_conversations(cluster: Cluster) -> list[str]:
    return [str(c["id"]) for c in cluster.demo["conversations"].values()]


async def committed(
    cluster: Cluster, base_url: str, *, as_user: str = "alice"
) -> dict[str, CommittedLog]:
    """Every demo conversation's log, read by a participant of all of them."""
    return await asyncio.to_thread(
        committed_logs,
        base_url,
        token=token(cluster, as_user),
        conversation_ids=all_conversations(cluster),
    )


def client_for(
    cluster: Cluster,
    name: str,
    positions: Mapping[str, int],
    *,
    receive_buffer_bytes: int | None = None,
) -> DeliveryClient:
    convs = conversations_of(cluster, name)
    return DeliveryClient(
        name=name,
        token=token(cluster, name),
        conversations=convs,
        positions={c: positions.get(c, 0) for c in convs},
        receive_buffer_bytes=receive_buffer_bytes,
    )


async def connect_clients(
    cluster: Cluster, placements: Iterable[tuple[str, DaphneInstance]], base_url: str
) -> list[DeliveryClient]:
    """One client per ``(name, instance)``, resumed from the conversations' current seqs.
    Each client knows the other instances as its failover list, as a service given every
    instance's URL does."""
    positions = last_seqs(await committed(cluster, base_url))
    clients = []
    for name, instance in placements:
        client = client_for(cluster, name, positions)
        client.name = f"{name}@{instance.instance_id}"
        others = [i.ws_url for i in cluster.instances if i is not instance]
        await client.connect(instance.ws_url, failover=others)
        clients.append(client)
    return clients


def demo_senders(cluster: Cluster) -> list[Sender]:
    """Every participant of every demo conversation, in turn."""
    senders = []
    for conv in cluster.demo["conversations"].values():
        for name, info in cluster.demo["users"].items():
            if str(info["id"]) in {str(p) for p in conv["participant_ids"]}:
                senders.append(Sender(name, str(info["token"]), str(conv["id"])))
    return senders


async def committed_after(traffic: Traffic, since: float, count: int, *, within: float) -> None:
    """Wait until ``count`` sends started after ``since`` are committed."""

    def done() -> int:
        return len([s for s in traffic.sent if s.started_at >= since])

    try:
        await async_wait_until(
            lambda: done() >= count, timeout=within, what=f"{count} sends committed"
        )
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}: only {done()}; failures: {traffic.failed[:3]}") from None


async def settle_and_check(
    cluster: Cluster, clients: list[DeliveryClient], base_url: str
) -> DeliveryReport:
    """Once every client holds every committed event (or the deadline passed): the report,
    asserted exactly once for every socket."""
    logs = await committed(cluster, base_url)
    wanted = last_seqs(logs)
    errors = []
    for client in clients:
        try:
            await client.wait_reached(
                {c: wanted[c] for c in client.conversations}, within=CATCH_UP_SECONDS
            )
        except TimeoutError as exc:
            errors.append(str(exc))
    report = assert_exactly_once(clients, logs)
    assert not errors, "\n".join(errors)
    return report
