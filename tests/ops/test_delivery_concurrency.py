"""Sequence numbers and idempotent sends under concurrent writers on two instances.

The trap (an autoincrement id is not commit order): two instances writing to one
conversation at once on PostgreSQL must still produce seqs 1..N with no gap and no repeat, in
commit order. Commit order is checked the way a client would break on it: a reader tails the
log with ``after_seq`` while the writes go on; a seq that committed after a higher one would
be skipped by it for good.

The cluster runs on the database ``DATABASE_URL`` names (PostgreSQL on CI; a fresh database
beside it, dropped afterwards), SQLite otherwise, where the seq test is skipped: SQLite runs
one writer at a time, so it cannot show the trap.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from scripts.deployment import Cluster
from tests.ops.conftest import FAST_ENV
from tests.ops.delivery_support import (
    DELIVERY_ENV,
    committed,
    connect_clients,
    settle_and_check,
)
from tests.ops.support import conversation, token
from tests.support.delivery_client import DeliveryClient, clients_close
from tests.support.delivery_traffic import Sender, message_post
from tests.support.rest import rest_call
from tests.support.services import service_running

pytestmark = pytest.mark.cluster

WRITE_SECONDS = 2.0


def _on_postgres() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


@pytest.fixture(scope="module")
def db_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two instances on the run's own database server (PostgreSQL when DATABASE_URL is)."""
    cluster = Cluster(
        instances=2,
        state_dir=tmp_path_factory.mktemp("delivery-db-cluster"),
        env={**FAST_ENV, **DELIVERY_ENV},
        with_firestore=False,
        database_url=os.environ.get("DATABASE_URL") if _on_postgres() else None,
    )
    with service_running(cluster):
        yield cluster


def _tail(base_url: str, tok: str, conversation_id: str, start: int, stop: threading.Event):
    """Follow the log as a client would: ask for what is after the highest seq seen."""
    seen: list[int] = []
    after = start
    while True:
        finished = stop.is_set()
        status, body = rest_call(
            base_url,
            "GET",
            f"/api/conversations/{conversation_id}/events?after_seq={after}",
            token=tok,
        )
        assert status == 200, body
        for event in body["events"]:
            seen.append(int(event["seq"]))
            after = max(after, int(event["seq"]))
        if finished and not body["events"]:
            return seen


async def test_two_instances_writing_one_conversation_get_gapless_seqs_in_commit_order(
    db_cluster: Cluster,
) -> None:
    if not _on_postgres():
        pytest.skip("needs PostgreSQL (DATABASE_URL=postgres://...): SQLite has one writer")
    cluster = db_cluster
    one, two = cluster.instances
    abc = conversation(cluster, "alice-bob-carol")
    placements = [(n, i) for n in ("alice", "bob", "carol") for i in (one, two)]
    clients = await connect_clients(cluster, placements, one.base_url)
    start_seq = (await committed(cluster, one.base_url))[abc].last_seq
    stop = threading.Event()
    try:
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(max_workers=8)
        tail = loop.run_in_executor(
            pool, _tail, two.base_url, token(cluster, "alice"), abc, start_seq, stop
        )
        deadline = time.monotonic() + WRITE_SECONDS
        acks: list[int] = []

        async def ws_writer(client: DeliveryClient) -> None:
            index = 0
            while time.monotonic() < deadline:
                reply = await client.send_message(abc, f"{client.name} ws {index}")
                assert reply.get("type") == "ack", reply
                acks.append(int(reply["message"]["seq"]))
                index += 1

        def rest_writer(base_url: str, name: str) -> list[int]:
            sender = Sender(name, token(cluster, name), abc)
            seqs, index = [], 0
            while time.monotonic() < deadline:
                sent = message_post(
                    [base_url],
                    sender,
                    body=f"{name} rest {index}",
                    client_id=uuid.uuid4().hex,
                    give_up_after=5,
                )
                seqs.append(sent.seq)
                # A read receipt now and then: durable too, from the same sequence.
                if index % 4 == 3:
                    status, body = rest_call(
                        base_url,
                        "POST",
                        "/api/messages/read",
                        token=sender.token,
                        body={"conversation_id": abc, "message_ids": [sent.message_id]},
                    )
                    assert status == 200, body
                index += 1
            return seqs

        rest = [
            loop.run_in_executor(pool, rest_writer, instance.base_url, name)
            for instance in (one, two)
            for name in ("alice", "bob")
        ]
        await asyncio.gather(*(ws_writer(c) for c in clients))
        for seqs in await asyncio.gather(*rest):
            acks.extend(seqs)
        stop.set()
        tailed = await tail
        pool.shutdown()

        logs = await committed(cluster, one.base_url)
        log = logs[abc]
        assert log.problems == []
        assert len(acks) == len(set(acks)), "two sends were answered with one seq"
        messages = {s for s, f in log.by_seq.items() if s > start_seq and f["type"] == "message"}
        assert set(acks) == messages, "the acks' seqs are not the log's messages"
        assert len(acks) >= 30, f"only {len(acks)} writes: not concurrent enough to mean much"
        # A reader tailing the log missed nothing: seqs became visible in seq order.
        assert tailed == list(range(start_seq + 1, log.last_seq + 1))
        await settle_and_check(cluster, clients, one.base_url)
    finally:
        stop.set()
        await clients_close(clients)


async def test_same_client_id_sent_to_two_instances_at_once_is_one_message(
    db_cluster: Cluster,
) -> None:
    cluster = db_cluster
    one, two = cluster.instances
    abc = conversation(cluster, "alice-bob-carol")
    clients = await connect_clients(
        cluster, [("alice", one), ("alice", two), ("bob", one), ("bob", two)], one.base_url
    )
    alice_one, alice_two, _bob_one, _bob_two = clients
    start_seq = (await committed(cluster, one.base_url))[abc].last_seq
    try:
        client_ids = []
        # Over WebSocket: the same frame from alice's sockets on both instances at once.
        for index in range(10):
            client_id = uuid.uuid4().hex
            client_ids.append(client_id)
            replies = await asyncio.gather(
                alice_one.send_message(abc, f"twice {index}", client_id=client_id),
                alice_two.send_message(abc, f"twice {index}", client_id=client_id),
            )
            assert [r.get("type") for r in replies] == ["ack", "ack"], replies
            first, second = (r["message"] for r in replies)
            assert first == second, "the repeat did not get the first one's result"

        # Over REST: the same POST to both instances at once: one 201, one 200, one body.
        sender = Sender("alice", token(cluster, "alice"), abc)
        for index in range(5):
            client_id = uuid.uuid4().hex
            client_ids.append(client_id)
            answers = await asyncio.gather(
                *(
                    asyncio.to_thread(
                        rest_call,
                        instance.base_url,
                        "POST",
                        f"/api/conversations/{abc}/messages",
                        token=sender.token,
                        body={"body": f"rest twice {index}", "client_id": client_id},
                    )
                    for instance in (one, two)
                )
            )
            assert sorted(status for status, _ in answers) == [200, 201], answers
            assert answers[0][1] == answers[1][1]

        logs = await committed(cluster, one.base_url)
        log = logs[abc]
        assert log.problems == []
        new = [f for s, f in sorted(log.by_seq.items()) if s > start_seq]
        assert [f["message"]["client_id"] for f in new] == client_ids, "not one event each"
        await settle_and_check(cluster, clients, one.base_url)
    finally:
        await clients_close(clients)
