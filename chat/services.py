"""Services that change the chat domain and emit its events (docs/events.md).

Consumers and viewsets parse and authorize, then call these; each writes, then emits through
``chat.events`` after commit, so a REST call and its WebSocket twin emit identical events.
``origin_channel`` is the channel name of the socket whose frame caused the call (``None`` for
REST): that socket gets an ``ack`` instead of the event.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from asgiref.sync import async_to_sync
from django.db import IntegrityError, connection, transaction
from django.utils.module_loading import import_string
from rest_framework.exceptions import ValidationError

from chat import events, selectors
from chat.event_types import MemberEvent, MessageEvent, ReadEvent, TypingEvent, event_frame
from chat.message_writes import message_write
from chat.models import Conversation, Event, Message, Participant
from chat.serializers import message_body, message_to_dict
from connections.control import user_group
from realtime_project.conf import realtime_settings
from realtime_project.database import database_async, database_async_enabled
from webhooks.outbox import (
    CANDIDATES_KEY,
    outbox_record,
    outbox_statement_cte,
    outbox_statement_params,
    webhooks_enabled,
)


def _seq_next(conversation_id: uuid.UUID) -> int:
    """Take the conversation's next ``seq``, holding its row's lock until commit.

    The lock is what makes ``seq`` commit order: a second writer to the conversation waits
    here until the first commits, then gets the next number. A service that locks the
    writer's participant row (a removal, a read marker, a message's membership check) locks
    it before this one, so two services never wait on each other in opposite orders.
    """
    table = Conversation._meta.db_table
    pk = Conversation._meta.pk
    assert pk is not None
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET last_seq = last_seq + 1 WHERE {pk.column} = %s RETURNING last_seq",
            [pk.get_db_prep_value(conversation_id, connection)],
        )
        row = cursor.fetchone()
    if row is None:
        raise Conversation.DoesNotExist
    return int(row[0])


def _event_log(
    *, conversation_id: uuid.UUID, event: MessageEvent | ReadEvent | MemberEvent, origin: str
) -> dict[str, Any]:
    """Write the durable event's row; the frame is what live delivery and replays send."""
    frame = event_frame(event)
    Event.objects.create(
        conversation_id=conversation_id,
        seq=event.seq,
        type=event.type,
        frame=frame,
        origin_channel=origin,
    )
    return frame


def _durable_emit(
    *,
    conversation_id: uuid.UUID,
    frame: dict[str, Any],
    origin_channel: str | None,
    extra_groups: Sequence[str] = (),
) -> None:
    events.frame_emit_on_commit(
        frame=frame,
        groups=[events.conversation_group(conversation_id), *extra_groups],
        exclude_channel=origin_channel,
    )


def participants_anyone(*, adder_id: str, user_ids: set[str]) -> set[str]:
    """The default ``PARTICIPANT_ADD_POLICY``: anyone may add any active user."""
    return user_ids


def _users_checked(
    *, user_ids: Sequence[object], field: str, adder_id: int | str | None = None
) -> set[str]:
    """The ids as strings, or a 400 that does not say which id is unknown (no enumeration).

    With ``adder_id``, ids that ``PARTICIPANT_ADD_POLICY`` keeps from that user answer the
    very same 400 as ids that name nobody, so a policy hides existence too (docs/auth.md).
    """
    wanted = {str(uid) for uid in user_ids}
    allowed = wanted
    if adder_id is not None:
        others = wanted - {str(adder_id)}
        policy: Callable[..., Iterable[object]] = import_string(
            realtime_settings.PARTICIPANT_ADD_POLICY
        )
        allowed = {str(uid) for uid in policy(adder_id=str(adder_id), user_ids=others)}
        allowed = (allowed & others) | (wanted - others)
    if allowed != wanted or selectors.existing_user_ids(user_ids=wanted) != wanted:
        raise ValidationError({field: ["Unknown or inactive user ids."]})
    return wanted


def _conversation_caps_check(
    *, conversation_id: uuid.UUID | None, adding: set[str], field: str
) -> None:
    """Refuse a change past ``CONVERSATION_MAX_PARTICIPANTS`` or ``USER_MAX_CONVERSATIONS``."""
    current = (
        0
        if conversation_id is None
        else Participant.objects.filter(conversation_id=conversation_id).count()
    )
    limit = realtime_settings.CONVERSATION_MAX_PARTICIPANTS
    if current + len(adding) > limit:
        raise ValidationError({field: [f"A conversation holds at most {limit} participants."]})
    per_user = realtime_settings.USER_MAX_CONVERSATIONS
    if selectors.users_at_conversation_limit(user_ids=adding, limit=per_user):
        raise ValidationError({field: [f"A user takes part in at most {per_user} conversations."]})


@transaction.atomic
def conversation_create(
    *, creator_id: int | str, title: str, participant_ids: Sequence[str]
) -> Conversation:
    """Create a conversation with the creator and ``participant_ids`` (400 on unknown ids).

    A new conversation's members are its starting state, not changes: no ``member`` events;
    the first durable event (a message, usually) has ``seq`` 1.
    """
    wanted = {str(uid) for uid in participant_ids} | {str(creator_id)}
    _users_checked(user_ids=sorted(wanted), field="participant_ids", adder_id=creator_id)
    _conversation_caps_check(conversation_id=None, adding=wanted, field="participant_ids")
    conversation = Conversation.objects.create(title=title, created_by_id=creator_id)
    Participant.objects.bulk_create(
        [Participant(conversation=conversation, user_id=int(uid)) for uid in sorted(wanted)]
    )
    for uid in sorted(wanted):
        events.join_send_on_commit(user_id=uid, conversation_id=str(conversation.id), seq=0)
    return conversation


@transaction.atomic
def participants_add(
    *,
    conversation: Conversation,
    user_ids: Sequence[object],
    by_id: int | str,
    by_policy: bool = True,
) -> list[str]:
    """Add users; each new one is a ``member`` event, and their sockets join at once.

    Users already taking part are left as they are. Returns the ids actually added.
    ``by_policy=False`` (the admin) skips ``PARTICIPANT_ADD_POLICY``.
    """
    wanted = _users_checked(
        user_ids=user_ids, field="user_ids", adder_id=by_id if by_policy else None
    )
    present = set(selectors.participant_ids(conversation_id=conversation.id))
    adding = sorted(wanted - present, key=int)
    if not adding:
        return []
    _conversation_caps_check(conversation_id=conversation.id, adding=set(adding), field="user_ids")
    for uid in adding:
        seq = _seq_next(conversation.id)
        Participant.objects.create(conversation=conversation, user_id=int(uid))
        _member_event(conversation=conversation, seq=seq, user_id=uid, action="added", by=by_id)
    return adding


def _member_event(
    *,
    conversation: Conversation,
    seq: int,
    user_id: int | str,
    action: Literal["added", "removed"],
    by: int | str,
) -> None:
    """Log a membership change and emit it after commit, to the conversation and the user.

    An added user's sockets are not in the conversation's group yet: their own group carries
    the event, and receiving it is what makes them follow the conversation. A removed user's
    sockets hear it through both (once), as the last event of that conversation.
    """
    event = MemberEvent(
        conversation_id=str(conversation.id),
        seq=seq,
        user_id=str(user_id),
        action=action,
        by=str(by),
    )
    _durable_emit(
        conversation_id=conversation.id,
        frame=_event_log(conversation_id=conversation.id, event=event, origin=""),
        origin_channel=None,
        extra_groups=[user_group(user_id)],
    )
    if webhooks_enabled():
        outbox_record(
            name=f"member.{action}",
            payload={
                "conversation_id": event.conversation_id,
                "user_id": event.user_id,
                "by": event.by,
                "seq": seq,
            },
            stream=event.conversation_id,
        )


def participant_add(*, conversation: Conversation, user_id: int | str) -> None:
    """Add one participant (admin and tests); the conversation's creator is named as ``by``."""
    participants_add(
        conversation=conversation,
        user_ids=[user_id],
        by_id=conversation.created_by_id or user_id,
        by_policy=False,
    )


@transaction.atomic
def participant_remove(*, conversation: Conversation, user_id: int | str, by_id: int | str) -> None:
    """Remove a participant (they leave, or the creator removes them).

    The ``member`` event is the last event of the conversation the removed user's sockets
    get; they leave its group on receiving it. Raises ``Participant.DoesNotExist`` when the
    user takes no part.
    """
    # The membership row first, then the seq (the lock order of every service, _seq_next):
    # a message of the removed user waits for this commit and then finds them gone.
    deleted, _ = Participant.objects.filter(conversation=conversation, user_id=user_id).delete()
    if not deleted:
        raise Participant.DoesNotExist
    seq = _seq_next(conversation.id)
    _member_event(conversation=conversation, seq=seq, user_id=user_id, action="removed", by=by_id)


# PostgreSQL: the sender's membership checked, the seq taken, the message inserted and its
# event logged, in one statement. The membership row is locked (``FOR KEY SHARE``) before the
# conversation's row, as a removal locks it (by deleting it) before taking its own seq: a
# message either commits before a removal of its sender, or finds the sender gone and
# writes nothing. ``FOR KEY SHARE`` does not wait for a read marker's update of that row.
_MESSAGE_STATEMENT = """
WITH p AS (
    SELECT 1 FROM {participants}
    WHERE conversation_id = %(conversation)s AND user_id = %(sender)s
    FOR KEY SHARE
), s AS (
    UPDATE {conversations} SET last_seq = last_seq + 1
    WHERE id = %(conversation)s AND EXISTS (SELECT 1 FROM p)
    RETURNING last_seq
), m AS (
    INSERT INTO {messages} (id, conversation_id, sender_id, body, created_at, seq, client_id)
    SELECT %(id)s, %(conversation)s, %(sender)s, %(body)s, %(at)s, s.last_seq, %(client_id)s
    FROM s
    RETURNING seq, id, conversation_id, sender_id
)
{webhooks}INSERT INTO {log} (conversation_id, seq, type, frame, origin_channel, created_at)
SELECT %(conversation)s, m.seq, %(type)s,
    jsonb_set(
        jsonb_set(%(frame)s::jsonb, '{{seq}}', to_jsonb(m.seq)), '{{message,seq}}', to_jsonb(m.seq)
    ),
    %(origin)s, %(at)s
FROM m
RETURNING seq
"""


# With webhooks on, the same statement owes a ``message.offline`` event (webhooks/outbox.py)
# naming every other participant as a candidate; the sender drops those with a live socket.
# Built from the message row itself (``m``), so that the statement takes no more parameters
# than the outbox's own (client-side binding quotes each one again).
_OFFLINE_PAYLOAD = """jsonb_build_object(
    'conversation_id', m.conversation_id::text, 'seq', m.seq, 'message_id', m.id::text,
    'sender_id', m.sender_id::text, '{candidates}',
    (SELECT coalesce(jsonb_agg(pp.user_id::text ORDER BY pp.user_id), '[]')
     FROM {participants} pp
     WHERE pp.conversation_id = m.conversation_id AND pp.user_id <> m.sender_id))"""


@functools.cache
def _message_statement(webhooks: bool = False) -> str:
    participants = Participant._meta.db_table
    cte = ""
    if webhooks:
        insert = outbox_statement_cte(
            # A sender alone in the conversation owes nothing; the sender's resolution drops
            # the row then, which is rarer and cheaper than a second scan on every write.
            source="m",
            stream="m.conversation_id::text",
            payload=_OFFLINE_PAYLOAD.format(candidates=CANDIDATES_KEY, participants=participants),
            unresolved=True,
        )
        cte = f", w AS (\n{insert}\n)\n"
    return _MESSAGE_STATEMENT.format(
        participants=participants,
        conversations=Conversation._meta.db_table,
        messages=Message._meta.db_table,
        log=Event._meta.db_table,
        webhooks=cte,
    )


def _message_new(
    *,
    conversation_id: uuid.UUID,
    sender_id: int | str,
    body: str,
    client_id: str | None,
    origin: str,
) -> tuple[Message, dict[str, Any], dict[str, Any]]:
    """The message (``seq`` still 0), its event's frame, and the statement's parameters."""
    message = Message(
        id=uuid.uuid4(),
        conversation_id=conversation_id,
        sender_id=int(sender_id),
        body=body,
        created_at=datetime.now(UTC),
        seq=0,
        client_id=client_id,
    )
    frame = event_frame(
        MessageEvent(conversation_id=str(conversation_id), seq=0, message=message_body(message))
    )
    params: dict[str, Any] = {
        "conversation": conversation_id,
        "id": message.id,
        "sender": message.sender_id,
        "body": body,
        "at": message.created_at,
        "client_id": client_id,
        "type": Event.Type.MESSAGE.value,
        "frame": json.dumps(frame),
        "origin": origin,
    }
    if webhooks_enabled():
        params.update(outbox_statement_params(name="message.offline", at=message.created_at))
    return message, frame, params


def _message_sequenced(message: Message, frame: dict[str, Any], seq: int) -> None:
    message.seq = frame["seq"] = frame["message"]["seq"] = seq
    message._state.adding = False


def _message_write_one_statement(
    *,
    conversation: Conversation,
    sender_id: int | str,
    body: str,
    client_id: str | None,
    origin: str,
) -> tuple[Message, dict[str, Any]]:
    """PostgreSQL: the portable path's writes and its membership check in one round trip.

    Measured, sequencing otherwise cost a third of a message's write (docs/benchmarks.md).
    Raises ``NotParticipant`` when the sender left (or never joined) before the write.
    """
    message, frame, params = _message_new(
        conversation_id=conversation.id,
        sender_id=sender_id,
        body=body,
        client_id=client_id,
        origin=origin,
    )
    with connection.cursor() as cursor:
        cursor.execute(_message_statement("wh_urls" in params), params)
        row = cursor.fetchone()
    if row is None:
        raise selectors.NotParticipant
    _message_sequenced(message, frame, int(row[0]))
    message._state.db = connection.alias
    return message, frame


def _message_offline_record(*, message: Message) -> None:
    """The portable path's twin of the statement's outbox row (``_OFFLINE_PAYLOAD``)."""
    others = sorted(
        (
            uid
            for uid in selectors.participant_ids(conversation_id=message.conversation_id)
            if uid != str(message.sender_id)
        ),
        key=int,
    )
    if not others:
        return
    outbox_record(
        name="message.offline",
        payload={
            "conversation_id": str(message.conversation_id),
            "seq": message.seq,
            "message_id": str(message.id),
            "sender_id": str(message.sender_id),
            CANDIDATES_KEY: others,
        },
        stream=str(message.conversation_id),
        unresolved=True,
        at=message.created_at,
    )


def message_send(
    *,
    conversation: Conversation,
    sender_id: int | str,
    body: str,
    client_id: str | None = None,
    origin_channel: str | None = None,
) -> Message:
    message, _ = message_send_or_get(
        conversation=conversation,
        sender_id=sender_id,
        body=body,
        client_id=client_id,
        origin_channel=origin_channel,
    )
    return message


def message_send_or_get(
    *,
    conversation: Conversation,
    sender_id: int | str,
    body: str,
    client_id: str | None = None,
    origin_channel: str | None = None,
) -> tuple[Message, bool]:
    """Send a message, or return the sender's earlier one with the same ``client_id``.

    The second element says whether this call created it. A repeat creates nothing and
    emits nothing; the unique constraint on (sender, client_id) decides between two copies
    that arrive at two instances at the same moment: the loser's transaction (its ``seq``
    included) rolls back, so the sequence keeps no gap. Raises ``selectors.NotParticipant``
    if the sender takes no part in the conversation when the message is written, and
    ``selectors.ClientIdInUse`` if ``client_id`` names the sender's message elsewhere.
    """
    # No look-up first: the constraint tells a repeat (rare) from a new message (every send).
    try:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                message, frame = _message_write_one_statement(
                    conversation=conversation,
                    sender_id=sender_id,
                    body=body,
                    client_id=client_id,
                    origin=origin_channel or "",
                )
            else:
                seq = _seq_next(conversation.id)
                # Checked under the conversation's lock (SQLite: the database's write lock):
                # a removal committed before it is seen.
                if not selectors.is_participant(conversation_id=conversation.id, user_id=sender_id):
                    raise selectors.NotParticipant
                message = Message.objects.create(
                    conversation=conversation,
                    sender_id=sender_id,
                    body=body,
                    seq=seq,
                    client_id=client_id,
                )
                frame = _event_log(
                    conversation_id=conversation.id,
                    event=MessageEvent(
                        conversation_id=str(conversation.id),
                        seq=seq,
                        message=message_body(message),
                    ),
                    origin=origin_channel or "",
                )
                if webhooks_enabled():
                    _message_offline_record(message=message)
            _durable_emit(
                conversation_id=conversation.id, frame=frame, origin_channel=origin_channel
            )
    except IntegrityError:
        if client_id is None:
            raise
        earlier = selectors.message_by_client_id(sender_id=sender_id, client_id=client_id)
        if earlier is None:
            raise
        if earlier.conversation_id != conversation.id:
            raise selectors.ClientIdInUse from None
        return earlier, False
    return message, True


async def message_send_async(
    *,
    conversation_id: uuid.UUID,
    sender_id: int | str,
    body: str,
    client_id: str | None = None,
    origin_channel: str | None = None,
) -> dict[str, Any]:
    """``message_send_or_get`` for a socket's frame; the message as the wire shows it.

    The conversation is named by id and the sender's membership is checked by the write
    itself. On PostgreSQL that is ``_MESSAGE_STATEMENT`` on the event loop's own async
    connection (realtime_project.database), committed on its own (or, while every connection
    is busy, with the messages waiting beside it: chat/message_writes.py), then emitted: no
    thread, no transaction block, no hop back for the emit. Elsewhere the synchronous service
    runs on the database threads. Raises ``selectors.ConversationNotFound``,
    ``NotParticipant`` or ``ClientIdInUse``.
    """
    if not database_async_enabled():
        result: dict[str, Any] = await _message_send_threaded(
            conversation_id=conversation_id,
            sender_id=sender_id,
            body=body,
            client_id=client_id,
            origin_channel=origin_channel,
        )
        return result
    message, frame, params = _message_new(
        conversation_id=conversation_id,
        sender_id=sender_id,
        body=body,
        client_id=client_id,
        origin=origin_channel or "",
    )
    try:
        row = await message_write(statement=_message_statement("wh_urls" in params), params=params)
    except psycopg.errors.UniqueViolation:
        # A resend: the statement wrote nothing (its seq included); the first one answers.
        earlier = (
            await selectors.message_by_client_id_async(sender_id=sender_id, client_id=client_id)
            if client_id is not None
            else None
        )
        if earlier is None:
            raise
        if earlier["conversation_id"] != str(conversation_id):
            raise selectors.ClientIdInUse from None
        return earlier
    if row is None:
        if await selectors.conversation_exists_async(conversation_id=conversation_id):
            raise selectors.NotParticipant
        raise selectors.ConversationNotFound
    _message_sequenced(message, frame, int(row[0]))
    await events.frame_emit(
        frame=frame,
        groups=[events.conversation_group(conversation_id)],
        exclude_channel=origin_channel,
    )
    return message_to_dict(message)


@database_async
def _message_send_threaded(
    *,
    conversation_id: uuid.UUID,
    sender_id: int | str,
    body: str,
    client_id: str | None,
    origin_channel: str | None,
) -> dict[str, Any]:
    conversation = selectors.conversation_get_for_participant(
        conversation_id=conversation_id, user_id=sender_id
    )
    message, _ = message_send_or_get(
        conversation=conversation,
        sender_id=sender_id,
        body=body,
        client_id=client_id,
        origin_channel=origin_channel,
    )
    return message_to_dict(message)


@transaction.atomic
def receipt_mark_read(
    *,
    conversation: Conversation,
    user_id: int | str,
    message_ids: Sequence[uuid.UUID],
    origin_channel: str | None = None,
) -> dict[str, Any]:
    """Record that ``user_id`` read ``message_ids`` (all of them messages of the conversation).

    The participant's read marker only moves forward: reading an older message again does not
    move it back.
    """
    # The reader's row before the seq (the lock order of every service, _seq_next); NO KEY
    # UPDATE, so a message of the same user (FOR KEY SHARE on this row) does not wait for it.
    participant = (
        Participant.objects.select_for_update(no_key=True)
        .filter(conversation=conversation, user_id=user_id)
        .first()
    )
    if participant is None:
        raise selectors.NotParticipant
    seq = _seq_next(conversation.id)
    unique_ids = list(dict.fromkeys(message_ids))
    outside = selectors.messages_outside_conversation(
        conversation_id=conversation.id, message_ids=unique_ids
    )
    if outside:
        raise ValidationError(
            {"message_ids": [f"Not messages of this conversation: {', '.join(outside)}."]}
        )
    read_at = datetime.now(UTC)
    newest = Message.objects.filter(pk__in=unique_ids).order_by("-created_at", "-id").first()
    current = participant.last_read_message
    if newest is not None and (current is None or newest.created_at >= current.created_at):
        participant.last_read_message = newest
    participant.last_read_at = read_at
    participant.save(update_fields=["last_read_message", "last_read_at"])
    event = ReadEvent(
        conversation_id=str(conversation.id),
        seq=seq,
        user_id=str(user_id),
        message_ids=[str(pk) for pk in unique_ids],
        read_at=read_at.isoformat(),
    )
    frame = _event_log(conversation_id=conversation.id, event=event, origin=origin_channel or "")
    _durable_emit(conversation_id=conversation.id, frame=frame, origin_channel=origin_channel)
    return {
        "conversation_id": event.conversation_id,
        "message_ids": event.message_ids,
        "read_at": event.read_at,
        "seq": seq,
    }


def typing_notify(
    *,
    conversation: Conversation,
    user_id: int | str,
    is_typing: bool,
    origin_channel: str | None = None,
) -> dict[str, Any]:
    """Tell the conversation that ``user_id`` started or stopped typing (nothing is stored).

    Typing writes nothing, so there is no commit to wait for: the REST path sends the same
    event the consumer does, at once.
    """
    return async_to_sync(typing_notify_async)(
        conversation_id=str(conversation.id),
        user_id=user_id,
        is_typing=is_typing,
        origin_channel=origin_channel,
    )


async def typing_notify_async(
    *,
    conversation_id: str,
    user_id: int | str,
    is_typing: bool,
    origin_channel: str | None = None,
) -> dict[str, Any]:
    """``typing_notify`` for a caller that already checked participation (the consumer).

    Typing is the hottest and most ephemeral frame; it writes nothing, so it skips the
    thread hop and the database.
    """
    await events.event_emit(
        event=TypingEvent(
            conversation_id=conversation_id, user_id=str(user_id), is_typing=is_typing
        ),
        groups=[events.conversation_group(conversation_id)],
        exclude_channel=origin_channel,
        ephemeral=True,
    )
    return {"conversation_id": conversation_id, "is_typing": is_typing}
