"""Group commit (chat/message_writes.py): messages that wait for a connection are written
together, and each still gets exactly the answer, the seq and the single row it would get
alone. PostgreSQL only: elsewhere messages are written on the database threads."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from channels.db import database_sync_to_async
from django.db import connection, transaction
from psycopg import AsyncConnection

from chat import message_writes, selectors, services
from chat.metrics import message_batches
from chat.models import Conversation, Event, Message, Participant
from realtime_project.database import database_async, database_async_enabled, database_connection
from tests.support.async_poll import async_wait_until
from tests.support.consumer_fixtures import *  # noqa: F403
from webhooks.models import OutboxEvent

pytestmark = pytest.mark.django_db(transaction=True)

DEADLINE_SECONDS = 10


@pytest.fixture
def one_connection(realtime_override: Callable[..., None]) -> None:
    """One async connection for the test's event loop, so that sends wait for it."""
    if not database_async_enabled():
        pytest.skip("group commit is the async database path's, on PostgreSQL (DATABASE_URL)")
    realtime_override(DATABASE_ASYNC_CONNECTIONS=1, MESSAGE_BATCH_MAX=32)


def batched() -> int:
    """Transactions so far that wrote more than one message."""
    return sum(message_batches.counts[1:])


@database_sync_to_async
def log_of(pk: str) -> list[tuple[int, str, str]]:
    """(seq, sender, body) of every logged message of the conversation, in seq order."""
    return [
        (event.seq, event.frame["message"]["sender_id"], event.frame["message"]["body"])
        for event in Event.objects.filter(conversation_id=pk, type="message").order_by("seq")
    ]


@database_sync_to_async
def bodies_written() -> list[str]:
    return list(Message.objects.values_list("body", flat=True))


@contextlib.asynccontextmanager
async def connection_held(expected_waiting: int) -> AsyncIterator[AsyncConnection[Any]]:
    """Keep the loop's one connection while the block starts its sends; on leaving, wait
    until ``expected_waiting`` messages are queued for it, then let it go: they are one batch.
    """
    release = asyncio.Event()
    taken: asyncio.Future[AsyncConnection[Any]] = asyncio.get_running_loop().create_future()

    async def hold() -> None:
        async with database_connection() as db:
            taken.set_result(db)
            await release.wait()

    holder = asyncio.ensure_future(hold())
    held = await taken
    try:
        yield held
        await waiting_until(expected_waiting)
    finally:
        release.set()
        await holder


async def waiting_until(count: int) -> None:
    """Until ``count`` messages of this loop wait for a connection (and are not cancelled)."""

    def waiting() -> bool:
        queue = message_writes._loops.get(asyncio.get_running_loop())
        return queue is not None and sum(not w.answer.done() for w in queue.writes) >= count

    await async_wait_until(waiting, interval=0.005, what=f"{count} messages waiting")


async def outcome(call: Any) -> Any:
    try:
        return await call
    except (
        selectors.NotParticipant,
        selectors.ConversationNotFound,
        selectors.ClientIdInUse,
    ) as error:
        return type(error)


async def test_concurrent_senders_are_batched_gap_free_each_once_in_order(
    demo: Any, one_connection: None
) -> None:
    ab, abc = demo.conversations["ab"], demo.conversations["abc"]
    senders = [(ab, "alice"), (ab, "bob"), (abc, "alice"), (abc, "bob"), (abc, "carol")]
    per_sender = 12
    before = batched()

    async def socket(conversation: str, name: str) -> list[int]:
        # One sender's socket: one message at a time, each acked before the next.
        seqs = []
        for i in range(per_sender):
            sent = await services.message_send_async(
                conversation_id=uuid.UUID(conversation),
                sender_id=demo.users[name].id,
                body=f"{name}-{i}",
                client_id=f"{conversation}-{name}-{i}",
            )
            seqs.append(sent["seq"])
        return seqs

    async with asyncio.timeout(DEADLINE_SECONDS * 3):
        acked = await asyncio.gather(*(socket(c, name) for c, name in senders))

    assert batched() > before, "every message was committed alone"
    for conversation in (ab, abc):
        log = await log_of(conversation)
        assert [seq for seq, _, _ in log] == list(range(1, len(log) + 1))
        for (c, name), seqs in zip(senders, acked, strict=True):
            if c != conversation:
                continue
            mine = [(seq, body) for seq, sender, body in log if sender == demo.users[name].id]
            # Each message once, in the order sent, at the seq its ack gave.
            assert mine == [(seq, f"{name}-{i}") for i, seq in enumerate(seqs)]
    assert len(await bodies_written()) == len(senders) * per_sender


async def test_each_message_of_a_batch_gets_its_own_answer(demo: Any, one_connection: None) -> None:
    ab, abc = uuid.UUID(demo.conversations["ab"]), uuid.UUID(demo.conversations["abc"])
    alice, bob, carol, dave = (demo.users[n].id for n in ("alice", "bob", "carol", "dave"))
    first = await services.message_send_async(
        conversation_id=ab, sender_id=alice, body="first", client_id="k1"
    )

    def send(conversation: uuid.UUID, sender: str, body: str, client_id: str | None = None) -> Any:
        return asyncio.ensure_future(
            outcome(
                services.message_send_async(
                    conversation_id=conversation, sender_id=sender, body=body, client_id=client_id
                )
            )
        )

    # Without an error the batch commits as one, a stranger's message and an unknown
    # conversation's included: they wrote nothing, and no seq was taken for them.
    before, splits = batched(), message_batches.splits
    async with connection_held(expected_waiting=4):
        calls = [
            send(ab, bob, "b1"),
            send(ab, dave, "stranger"),
            send(uuid.uuid4(), alice, "nowhere"),
            send(abc, carol, "c1"),
        ]
    results = await asyncio.gather(*calls)
    assert batched() == before + 1
    assert message_batches.splits == splits
    assert results[1] is selectors.NotParticipant
    assert results[2] is selectors.ConversationNotFound
    assert (results[0]["seq"], results[3]["seq"]) == (2, 1)

    # A resend fails the batch's transaction: rolled back, each message is written alone.
    async with connection_held(expected_waiting=6):
        calls = [
            send(abc, alice, "a1"),
            send(ab, alice, "first again", client_id="k1"),  # a resend: the first answers
            send(ab, dave, "stranger"),
            send(abc, bob, "borrowed", client_id="k1"),  # bob's own k1: new
            send(abc, alice, "elsewhere", client_id="k1"),  # alice's k1 is ab's
            send(ab, bob, "b2"),
        ]
    results = await asyncio.gather(*calls)
    assert message_batches.splits == splits + 1
    assert results[1] == first
    assert results[2] is selectors.NotParticipant
    assert results[4] is selectors.ClientIdInUse
    assert [results[i]["seq"] for i in (0, 3, 5)] == [2, 3, 3]

    assert await log_of(str(ab)) == [
        (1, alice, "first"),
        (2, bob, "b1"),
        (3, bob, "b2"),
    ]
    assert await log_of(str(abc)) == [(1, carol, "c1"), (2, alice, "a1"), (3, bob, "borrowed")]
    assert sorted(await bodies_written()) == sorted(["first", "b1", "b2", "c1", "a1", "borrowed"])


async def test_a_message_cancelled_while_it_waits_is_not_written(
    demo: Any, one_connection: None
) -> None:
    ab = uuid.UUID(demo.conversations["ab"])
    alice, bob = demo.alice.id, demo.bob.id
    async with connection_held(expected_waiting=1):
        gone = asyncio.ensure_future(
            services.message_send_async(conversation_id=ab, sender_id=alice, body="gone")
        )
        kept = asyncio.ensure_future(
            services.message_send_async(conversation_id=ab, sender_id=bob, body="kept")
        )
        await waiting_until(2)
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
    assert (await kept)["seq"] == 1
    assert await log_of(str(ab)) == [(1, bob, "kept")]


async def test_a_batch_and_a_removal_of_one_of_its_senders_do_not_deadlock(
    demo: Any, one_connection: None
) -> None:
    """A removal has deleted carol's participant row and is about to take the conversation's
    row; a batch holding a message of alice's and one of carol's, in that conversation, must
    not take the conversation's row before waiting for carol's: PostgreSQL would find the
    deadlock after a second and abort one of the two (a batch written again, or a removal
    failed)."""
    abc = demo.conversations["abc"]
    conv = await database_sync_to_async(Conversation.objects.get)(pk=abc)
    alice, carol = demo.alice.id, demo.carol.id
    deleted, go = threading.Event(), threading.Event()

    def removal_in_two_steps() -> None:
        # participant_remove, paused between its two locks.
        with transaction.atomic():
            Participant.objects.filter(conversation=conv, user_id=carol).delete()
            deleted.set()
            go.wait(timeout=DEADLINE_SECONDS)
            seq = services._seq_next(conv.id)
            services._member_event(
                conversation=conv, seq=seq, user_id=carol, action="removed", by=alice
            )

    def lock_waits() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return int(cursor.fetchone()[0])

    removal = asyncio.ensure_future(database_async(removal_in_two_steps)())
    await async_wait_until(deleted.is_set, interval=0.005, what="carol's row deleted")
    splits = message_batches.splits
    async with connection_held(expected_waiting=2):
        calls = [
            asyncio.ensure_future(
                outcome(
                    services.message_send_async(
                        conversation_id=uuid.UUID(abc), sender_id=sender, body=sender
                    )
                )
            )
            for sender in (alice, carol)
        ]
    # The batch waits for carol's row (or, without its lock order, holds the conversation's).
    await async_wait_until(database_async(lock_waits), interval=0.005, what="a lock wait")
    go.set()
    async with asyncio.timeout(DEADLINE_SECONDS):
        results = await asyncio.gather(*calls)
        await removal
    assert results[1] is selectors.NotParticipant
    assert results[0]["seq"] == 2  # after the removal's
    assert message_batches.splits == splits
    assert [(seq, sender) for seq, sender, _ in await log_of(abc)] == [(2, alice)]


async def test_a_batch_on_a_broken_connection_fails_each_message_as_alone(
    demo: Any, one_connection: None
) -> None:
    """The server ends the connection a batch is about to use: each of its messages gets the
    error a lone statement would get (whether a commit happened is unknown to both), and the
    next message is written on a new connection."""
    ab = uuid.UUID(demo.conversations["ab"])
    alice, bob = demo.alice.id, demo.bob.id

    def terminate(pid: int) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])

    splits = message_batches.splits
    async with connection_held(expected_waiting=2) as held:
        calls = [
            asyncio.ensure_future(
                services.message_send_async(conversation_id=ab, sender_id=sender, body=sender)
            )
            for sender in (alice, bob)
        ]
        await database_async(terminate)(held.info.backend_pid)
    results = await asyncio.gather(*calls, return_exceptions=True)
    # The server's goodbye (AdminShutdown) or the closed socket, as the read finds it: both
    # are what a lone statement gets from a terminated backend.
    assert len(results) == 2
    assert all(isinstance(result, psycopg.OperationalError) for result in results), results
    assert message_batches.splits == splits  # not written again, one by one
    assert await log_of(str(ab)) == []
    sent = await services.message_send_async(conversation_id=ab, sender_id=alice, body="again")
    assert sent["seq"] == 1


async def test_a_batch_records_each_written_message_once_in_the_webhooks_outbox(
    demo: Any, one_connection: None, realtime_override: Callable[..., None]
) -> None:
    realtime_override(WEBHOOK_URLS=["http://127.0.0.1:9/hooks"], WEBHOOK_SECRET="s")
    ab, abc = uuid.UUID(demo.conversations["ab"]), uuid.UUID(demo.conversations["abc"])
    alice, bob, carol = demo.alice.id, demo.bob.id, demo.carol.id
    await services.message_send_async(conversation_id=ab, sender_id=alice, body="a", client_id="k")

    def send(conversation: uuid.UUID, sender: str, client_id: str | None = None) -> Any:
        return asyncio.ensure_future(
            services.message_send_async(
                conversation_id=conversation, sender_id=sender, body=sender, client_id=client_id
            )
        )

    before, splits = batched(), message_batches.splits
    async with connection_held(expected_waiting=3):
        calls = [send(abc, carol), send(ab, bob), send(abc, bob)]
    await asyncio.gather(*calls)
    assert (batched(), message_batches.splits) == (before + 1, splits)
    async with connection_held(expected_waiting=3):  # a resend among them: split
        calls = [send(abc, alice), send(ab, alice, client_id="k"), send(ab, bob)]
    await asyncio.gather(*calls)
    assert message_batches.splits == splits + 1

    @database_sync_to_async
    def recorded() -> tuple[list[tuple[str, int, str]], list[tuple[str, int, str]]]:
        outbox = [
            (row["conversation_id"], row["seq"], row["message_id"])
            for row in OutboxEvent.objects.filter(name="message.offline").values_list(
                "payload", flat=True
            )
        ]
        messages = [(str(m.conversation_id), m.seq, str(m.id)) for m in Message.objects.all()]
        return sorted(outbox), sorted(messages)

    outbox, messages = await recorded()
    assert len(messages) == 6
    assert outbox == messages
