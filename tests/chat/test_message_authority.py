"""A message is written only while its sender takes part: the write itself checks.

The consumer and the REST view look membership up first, but a removal can commit between that
look-up and the write; the write's own check (one statement on PostgreSQL, under the
conversation's lock elsewhere) is what keeps a removed user's message out of the log.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.db import database_sync_to_async

from chat import selectors, services
from chat.models import Conversation, Event, Message
from realtime_project.database import database_async
from tests.support.consumer_fixtures import *  # noqa: F403

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def conversation(pk: str) -> Conversation:
    return Conversation.objects.get(pk=pk)


@database_sync_to_async
def log_of(pk: str) -> list[tuple[int, str, str]]:
    """(seq, type, who) of every logged event: the message's sender or the member."""
    rows = []
    for event in Event.objects.filter(conversation_id=pk).order_by("seq"):
        frame = event.frame
        who = frame["message"]["sender_id"] if event.type == "message" else frame["user_id"]
        rows.append((event.seq, event.type, who))
    return rows


async def test_a_removed_sender_writes_nothing(demo) -> None:
    abc = demo.conversations["abc"]
    conv = await conversation(abc)
    await database_sync_to_async(services.participant_remove)(
        conversation=conv, user_id=demo.carol.id, by_id=demo.carol.id
    )
    with pytest.raises(selectors.NotParticipant):
        await services.message_send_async(
            conversation_id=uuid.UUID(abc), sender_id=demo.carol.id, body="too late"
        )
    # The REST path, which looked the conversation up before the removal, is refused too.
    with pytest.raises(selectors.NotParticipant):
        await database_sync_to_async(services.message_send_or_get)(
            conversation=conv, sender_id=demo.carol.id, body="too late"
        )
    assert await log_of(abc) == [(1, "member", str(demo.carol.id))]
    assert not await database_sync_to_async(Message.objects.filter(conversation=conv).exists)()
    # The next message takes the next seq: the refused ones left no gap.
    sent = await services.message_send_async(
        conversation_id=uuid.UUID(abc), sender_id=demo.alice.id, body="on"
    )
    assert sent["seq"] == 2


async def test_unknown_conversation_and_stranger_are_told_apart(demo) -> None:
    with pytest.raises(selectors.ConversationNotFound):
        await services.message_send_async(
            conversation_id=uuid.uuid4(), sender_id=demo.alice.id, body="x"
        )
    with pytest.raises(selectors.NotParticipant):
        await services.message_send_async(
            conversation_id=uuid.UUID(demo.conversations["ab"]), sender_id=demo.dave.id, body="x"
        )


async def test_messages_racing_a_removal_land_before_it_or_not_at_all(demo) -> None:
    """Carol sends while she is removed and while she marks messages read: every message of
    hers that is logged comes before her removal, nothing deadlocks, no seq is skipped."""
    abc = demo.conversations["abc"]
    conv = await conversation(abc)
    first = await services.message_send_async(
        conversation_id=uuid.UUID(abc), sender_id=demo.alice.id, body="read me"
    )

    async def send(i: int) -> str:
        try:
            await services.message_send_async(
                conversation_id=uuid.UUID(abc), sender_id=demo.carol.id, body=f"m{i}"
            )
        except selectors.NotParticipant:
            return "refused"
        return "sent"

    async def read() -> str:
        try:
            await database_async(services.receipt_mark_read)(
                conversation=conv, user_id=demo.carol.id, message_ids=[uuid.UUID(first["id"])]
            )
        except selectors.NotParticipant:
            return "refused"
        return "read"

    async def remove() -> str:
        await asyncio.sleep(0)  # let some sends start first
        await database_async(services.participant_remove)(
            conversation=conv, user_id=demo.carol.id, by_id=demo.alice.id
        )
        return "removed"

    calls = [send(i) for i in range(20)] + [read(), read(), remove()]
    async with asyncio.timeout(30):
        outcomes = await asyncio.gather(*calls)
    log = await log_of(abc)
    assert [seq for seq, _, _ in log] == list(range(1, len(log) + 1))
    removal = [seq for seq, kind, _ in log if kind == "member"]
    assert len(removal) == 1
    carol_messages = [
        seq for seq, kind, who in log if kind == "message" and who == str(demo.carol.id)
    ]
    assert all(seq < removal[0] for seq in carol_messages)
    assert len(carol_messages) == outcomes.count("sent")
    assert outcomes.count("sent") + outcomes.count("refused") + outcomes.count("read") == 22
