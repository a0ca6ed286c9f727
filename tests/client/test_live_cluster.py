"""The client package against live instances: real Daphne processes, Redis and the database.

Each test counts, per client, the durable events its app was handed, against the event log
the database committed: every one once, in seq order, whatever failed meanwhile.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest
from realtime_client import Client, Event, MessageEvent, Observer, Resumed, TypingEvent
from realtime_client.close_codes import WS_1013_TRY_AGAIN_LATER
from realtime_client.events import DurableEvent, MemberEvent, ReadEvent

from scripts.deployment import Cluster
from tests.ops.delivery_support import (
    DELIVERY_ENV,
    committed,
    committed_after,
    conversations_of,
    demo_senders,
)
from tests.ops.support import token
from tests.support.async_poll import async_wait_until
from tests.support.delivery_ledger import CommittedLog
from tests.support.delivery_traffic import Traffic, send_at_rate
from tests.support.rest import rest_call

pytestmark = pytest.mark.cluster

RATE = 25.0  # messages a second over REST
SECONDS = 4.0
CATCH_UP_SECONDS = 15.0
STORM_CLIENTS = 30


class App:
    """What an app using the client sees: its events, per conversation, in arrival order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.durable: dict[str, list[DurableEvent]] = defaultdict(list)
        self.other: list[Event] = []

    def take(self, event: Event) -> None:
        if isinstance(event, MessageEvent | ReadEvent | MemberEvent):
            self.durable[event.conversation_id].append(event)
        else:
            self.other.append(event)

    def seqs(self, conversation_id: str) -> list[int]:
        return [e.seq for e in self.durable[conversation_id]]


def client_of(
    cluster: Cluster,
    name: str,
    app: App,
    urls: list[str],
    positions: dict[str, int],
    **options: Any,
) -> Client:
    return Client(
        urls,
        token=token(cluster, name),
        positions={c: positions[c] for c in conversations_of(cluster, name)},
        on_event=app.take,
        use_proxy=False,  # tests only ever reach 127.0.0.1
        **options,
    )


def assert_once_in_order(
    app: App, logs: dict[str, CommittedLog], start: dict[str, int], conversations: list[str]
) -> None:
    """The app got every committed event after ``start`` exactly once, in seq order, each
    the committed one."""
    for conversation_id in conversations:
        log = logs[conversation_id]
        got = app.durable[conversation_id]
        wanted = list(range(start[conversation_id] + 1, log.last_seq + 1))
        assert [e.seq for e in got] == wanted, (
            f"{app.name} in {conversation_id}: lost "
            f"{sorted(set(wanted) - {e.seq for e in got})}, seqs {[e.seq for e in got]}"
        )
        for event in got:
            assert event.event_id == log.by_seq[event.seq]["event_id"], (app.name, event.seq)


async def caught_up(
    apps: dict[str, App], logs: dict[str, CommittedLog], start: dict[str, int], cluster: Cluster
) -> None:
    """Until each app has been handed its conversations' last committed seq."""
    for name, app in apps.items():
        convs = [c for c in conversations_of(cluster, name) if logs[c].last_seq > start[c]]

        def holds_all(app: App = app, convs: list[str] = convs) -> bool:
            return all(app.seqs(c) and app.seqs(c)[-1] >= logs[c].last_seq for c in convs)

        await async_wait_until(
            holds_all, timeout=CATCH_UP_SECONDS, what=f"{name} holding every committed event"
        )


async def test_messages_cross_instances_once_and_in_order(start_cluster) -> None:
    cluster = start_cluster(instances=2, firestore=False, **DELIVERY_ENV)
    one, two = cluster.instances
    ab = str(cluster.demo["conversations"]["alice-bob"]["id"])
    start = {c: log.last_seq for c, log in (await committed(cluster, one.base_url)).items()}
    alice_app, bob_app = App("alice"), App("bob")
    alice = client_of(cluster, "alice", alice_app, [one.ws_url], start)
    bob = client_of(cluster, "bob", bob_app, [two.ws_url], start)
    async with alice, bob:
        assert (alice.connected and alice.connected.instance_id) == one.instance_id
        assert (bob.connected and bob.connected.instance_id) == two.instance_id
        sent = [await bob.send_message(ab, f"from B {n}") for n in range(20)]
        assert [m.seq for m in sent] == list(range(start[ab] + 1, start[ab] + 21))
        await alice.typing(ab)
        await async_wait_until(
            lambda: len(alice_app.durable[ab]) >= 20, timeout=10, what="alice has 20"
        )
        await async_wait_until(
            lambda: any(isinstance(e, TypingEvent) for e in bob_app.other),
            timeout=10,
            what="bob sees alice typing",
        )
        logs = await committed(cluster, one.base_url)
        assert_once_in_order(alice_app, logs, start, [ab])
        received = [e.message for e in alice_app.durable[ab] if isinstance(e, MessageEvent)]
        assert [m.id for m in received] == [m.id for m in sent]
        # The sender gets acks, not its own events, yet holds the conversation up to them.
        assert bob_app.durable[ab] == []
        assert bob.positions[ab] == start[ab] + 20


async def test_instance_killed_clients_fail_over_to_the_other_url_and_resume(
    start_cluster,
) -> None:
    cluster = start_cluster(instances=2, firestore=False, **DELIVERY_ENV)
    one, two = cluster.instances
    start = {c: log.last_seq for c, log in (await committed(cluster, two.base_url)).items()}
    apps = {name: App(name) for name in ("alice", "bob", "carol")}
    clients = {
        name: client_of(cluster, name, apps[name], [one.ws_url, two.ws_url], start) for name in apps
    }
    try:
        for client in clients.values():
            await client.start()
            await client.wait_resumed(within=10)
        traffic = Traffic()
        sending = asyncio.create_task(
            send_at_rate(
                [two.base_url], demo_senders(cluster), rate=RATE, seconds=SECONDS, traffic=traffic
            )
        )
        await committed_after(traffic, 0, 10, within=5)
        await asyncio.to_thread(one.kill)
        killed_at = time.monotonic()
        await sending
        assert not traffic.failed, traffic.failed[:3]
        assert traffic.between(killed_at, time.monotonic()), "nothing committed after the kill"
        logs = await committed(cluster, two.base_url)
        await caught_up(apps, logs, start, cluster)
        for name, app in apps.items():
            assert_once_in_order(app, logs, start, conversations_of(cluster, name))
            client = clients[name]
            assert client.state == "open"
            assert client.connected is not None
            assert client.connected.instance_id == two.instance_id
    finally:
        for client in clients.values():
            await client.close()


async def test_redis_restarted_every_client_counts_every_message_once(start_cluster) -> None:
    cluster = start_cluster(instances=2, firestore=False, **DELIVERY_ENV)
    one, two = cluster.instances
    start = {c: log.last_seq for c, log in (await committed(cluster, one.base_url)).items()}
    placements = {"alice": one, "bob": two, "carol": one}
    apps = {name: App(name) for name in placements}
    clients = {
        name: client_of(cluster, name, apps[name], [instance.ws_url], start)
        for name, instance in placements.items()
    }
    try:
        for client in clients.values():
            await client.start()
            await client.wait_resumed(within=10)
        traffic = Traffic()
        sending = asyncio.create_task(
            send_at_rate(
                [one.base_url, two.base_url],
                demo_senders(cluster),
                rate=RATE,
                seconds=SECONDS,
                traffic=traffic,
            )
        )
        await committed_after(traffic, 0, 8, within=5)
        await asyncio.to_thread(cluster.redis.restart)  # back empty
        restarted_at = time.monotonic()
        await committed_after(traffic, restarted_at, 5, within=5)
        await sending
        assert not traffic.failed, traffic.failed[:3]
        logs = await committed(cluster, one.base_url)
        await caught_up(apps, logs, start, cluster)
        owed = 0
        for name, app in apps.items():
            convs = conversations_of(cluster, name)
            assert_once_in_order(app, logs, start, convs)
            owed += sum(logs[c].last_seq - start[c] for c in convs)
        assert owed >= len(traffic.sent)
    finally:
        for client in clients.values():
            await client.close()


async def test_outbox_stores_each_client_id_once_across_a_reconnect(start_cluster) -> None:
    cluster = start_cluster(instances=2, firestore=False, **DELIVERY_ENV)
    one, two = cluster.instances
    ab = str(cluster.demo["conversations"]["alice-bob"]["id"])
    start = {c: log.last_seq for c, log in (await committed(cluster, two.base_url)).items()}
    app = App("alice")
    # Jitter drawn high: the client stays down long enough (>= 0.45 s) to be seen down.
    alice = client_of(cluster, "alice", app, [one.ws_url, two.ws_url], start, random=lambda: 0.9)
    async with alice:
        first_id, second_id = uuid.uuid4().hex, uuid.uuid4().hex
        first = await alice.send_message(ab, "before", client_id=first_id)
        await asyncio.to_thread(one.kill)
        await async_wait_until(lambda: alice.state != "open", timeout=10, what="the drop")
        # Written while no socket is open: both wait in the outbox, the first one's
        # client_id again.
        second = asyncio.create_task(alice.send_message(ab, "while down", client_id=second_id))
        again = asyncio.create_task(alice.send_message(ab, "before, again", client_id=first_id))
        async with asyncio.timeout(20):
            stored_second, stored_again = await asyncio.gather(second, again)
        assert alice.connected is not None and alice.connected.instance_id == two.instance_id
        assert stored_again == first, "a repeated client_id must get the first one's result"
        assert stored_second.seq == first.seq + 1
        log = (await committed(cluster, two.base_url))[ab]
        client_ids = [
            f["message"]["client_id"]
            for s, f in sorted(log.by_seq.items())
            if s > start[ab] and f["type"] == "message"
        ]
        assert client_ids == [first_id, second_id], "one message per client_id"
        assert alice.pending_messages == 0


async def test_unrecovered_resume_is_filled_by_rest_once_and_in_order(start_cluster) -> None:
    cluster = start_cluster(instances=2, firestore=False, RESUME_MAX_EVENTS="5", **DELIVERY_ENV)
    one, two = cluster.instances
    ab = str(cluster.demo["conversations"]["alice-bob"]["id"])
    start = {c: log.last_seq for c, log in (await committed(cluster, one.base_url)).items()}
    alice_app, bob_app = App("alice"), App("bob")
    alice = client_of(cluster, "alice", alice_app, [one.ws_url], start)
    async with alice:
        # More than RESUME_MAX_EVENTS committed before bob's first socket: no replay.
        sent = [await alice.send_message(ab, f"m{n}") for n in range(12)]
        bob = client_of(cluster, "bob", bob_app, [two.ws_url], start)
        async with bob:
            await async_wait_until(
                lambda: len(bob_app.durable[ab]) >= 12, timeout=15, what="bob caught up"
            )
            resumed = [e for e in bob_app.other if isinstance(e, Resumed)]
            assert resumed and resumed[0].conversations[ab][0] is False
            logs = await committed(cluster, one.base_url)
            assert_once_in_order(bob_app, logs, start, [ab])
            got = [e.message.id for e in bob_app.durable[ab] if isinstance(e, MessageEvent)]
            assert got == [m.id for m in sent]
            assert bob.positions[ab] == start[ab] + 12


async def test_connects_shed_with_1013_come_back_and_miss_nothing(start_cluster) -> None:
    """A connect storm on an instance that takes one connect at a time: the shed clients
    back off (the hint when the close says one, full jitter otherwise) and all get in."""
    cluster = start_cluster(instances=2, firestore=False, CONNECT_MAX_IN_FLIGHT="1", **DELIVERY_ENV)
    one, _two = cluster.instances
    abc = str(cluster.demo["conversations"]["alice-bob-carol"]["id"])
    start = {c: log.last_seq for c, log in (await committed(cluster, one.base_url)).items()}
    names = [("alice", "bob", "carol")[n % 3] for n in range(STORM_CLIENTS)]
    apps = [App(f"{name}-{n}") for n, name in enumerate(names)]
    closes: list[int | None] = []

    class Refusals(Observer):
        """Upgrades refused before the handshake (503), the other form of shedding."""

        def refused(self, url: str, status: int, delay: float) -> None:
            closes.append(status)

    clients = [
        client_of(
            cluster,
            name,
            app,
            [one.ws_url],
            start,
            on_state=lambda change: closes.append(change.code) if change.code else None,
            observer=Refusals(),
        )
        for name, app in zip(names, apps, strict=True)
    ]
    try:
        await asyncio.gather(*(client.start() for client in clients))
        await asyncio.gather(*(client.wait_resumed(within=30) for client in clients))
        # Shed before the handshake (503) or right after it (1013), each with its hint.
        assert {WS_1013_TRY_AGAIN_LATER, 503} & set(closes), f"nothing was shed: {closes}"
        status, body = await asyncio.to_thread(
            rest_call,
            one.base_url,
            "POST",
            f"/api/conversations/{abc}/messages",
            token=token(cluster, "alice"),
            body={"body": "after the storm"},
        )
        assert status == 201, body
        for app in apps:
            await async_wait_until(
                lambda app=app: app.seqs(abc) == [start[abc] + 1],  # type: ignore[misc]
                timeout=10,
                what=f"{app.name} has the message once",
            )
    finally:
        await asyncio.gather(*(client.close() for client in clients))
