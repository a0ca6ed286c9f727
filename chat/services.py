"""Services that change the chat domain and emit its events (docs/events.md).

Consumers and viewsets parse and authorize, then call these; each writes, then emits through
``chat.events`` after commit, so a REST call and its WebSocket twin emit identical events.
``origin_channel`` is the channel name of the socket whose frame caused the call (``None`` for
REST): that socket gets an ``ack`` instead of the event.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction
from rest_framework.exceptions import ValidationError

from chat import events, selectors
from chat.models import Conversation, Message, Participant
from chat.serializers import message_to_dict


@transaction.atomic
def conversation_create(
    *, creator_id: int | str, title: str, participant_ids: Sequence[str]
) -> Conversation:
    """Create a conversation with the creator and ``participant_ids`` (400 on unknown ids)."""
    wanted = {str(uid) for uid in participant_ids} | {str(creator_id)}
    known = selectors.existing_user_ids(user_ids=wanted)
    unknown = sorted(wanted - known)
    if unknown:
        raise ValidationError({"participant_ids": [f"Unknown user ids: {', '.join(unknown)}."]})
    conversation = Conversation.objects.create(title=title, created_by_id=creator_id)
    Participant.objects.bulk_create(
        [Participant(conversation=conversation, user_id=int(uid)) for uid in sorted(wanted)]
    )
    for uid in sorted(wanted):
        _tell_sockets_to_join(user_id=uid, conversation_id=conversation.id)
    return conversation


@transaction.atomic
def participant_add(*, conversation: Conversation, user_id: int | str) -> Participant:
    """Add a participant; their live sockets start receiving the conversation's events."""
    participant, created = Participant.objects.get_or_create(
        conversation=conversation, user_id=user_id
    )
    if created:
        _tell_sockets_to_join(user_id=user_id, conversation_id=conversation.id)
    return participant


def _tell_sockets_to_join(*, user_id: int | str, conversation_id: uuid.UUID) -> None:
    events.control_send_on_commit(
        group=events.user_group(user_id),
        message={"type": events.JOIN_MESSAGE_TYPE, "conversation_id": str(conversation_id)},
    )


@transaction.atomic
def message_send(
    *,
    conversation: Conversation,
    sender_id: int | str,
    body: str,
    origin_channel: str | None = None,
) -> Message:
    message = Message.objects.create(conversation=conversation, sender_id=sender_id, body=body)
    events.event_emit_on_commit(
        event_type="message",
        payload={"conversation_id": str(conversation.id), "message": message_to_dict(message)},
        groups=[events.conversation_group(conversation.id)],
        exclude_channel=origin_channel,
    )
    return message


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
    participant = Participant.objects.select_for_update().get(
        conversation=conversation, user_id=user_id
    )
    current = participant.last_read_message
    if newest is not None and (current is None or newest.created_at >= current.created_at):
        participant.last_read_message = newest
    participant.last_read_at = read_at
    participant.save(update_fields=["last_read_message", "last_read_at"])
    result = {
        "conversation_id": str(conversation.id),
        "message_ids": [str(pk) for pk in unique_ids],
        "read_at": read_at.isoformat(),
    }
    events.event_emit_on_commit(
        event_type="read",
        payload={"user_id": str(user_id), **result},
        groups=[events.conversation_group(conversation.id)],
        exclude_channel=origin_channel,
    )
    return result


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
    result = {"conversation_id": conversation_id, "is_typing": is_typing}
    await events.event_emit(
        event_type="typing",
        payload={"user_id": str(user_id), **result},
        groups=[events.conversation_group(conversation_id)],
        exclude_channel=origin_channel,
        ephemeral=True,
    )
    return result
