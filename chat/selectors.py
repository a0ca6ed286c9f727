"""Read-only queries of the chat domain."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from chat.models import Conversation, Message, Participant


class ConversationNotFound(Exception):
    pass


class NotParticipant(Exception):
    pass


def _as_uuid(value: object) -> uuid.UUID | None:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None


def conversation_get_for_participant(
    *, conversation_id: object, user_id: int | str
) -> Conversation:
    """The conversation, if ``user_id`` takes part in it.

    Raises ``ConversationNotFound`` (404) or ``NotParticipant`` (403); neither says anything
    about the conversation beyond whether it exists.
    """
    pk = _as_uuid(conversation_id)
    if pk is None:
        raise ConversationNotFound
    try:
        conversation = Conversation.objects.get(pk=pk)
    except Conversation.DoesNotExist:
        raise ConversationNotFound from None
    if not Participant.objects.filter(conversation_id=pk, user_id=user_id).exists():
        raise NotParticipant
    return conversation


def conversation_list_for_user(*, user_id: int | str) -> QuerySet[Conversation]:
    return Conversation.objects.filter(memberships__user_id=user_id).order_by("-created_at", "-id")


def conversation_ids_for_user(*, user_id: int | str) -> list[str]:
    return [
        str(pk)
        for pk in Participant.objects.filter(user_id=user_id).values_list(
            "conversation_id", flat=True
        )
    ]


def participant_ids(*, conversation_id: uuid.UUID | str) -> list[str]:
    return sorted(
        str(pk)
        for pk in Participant.objects.filter(conversation_id=conversation_id).values_list(
            "user_id", flat=True
        )
    )


def message_list(*, conversation: Conversation) -> QuerySet[Message]:
    return Message.objects.filter(conversation=conversation).order_by("-created_at", "-id")


def messages_outside_conversation(
    *, conversation_id: uuid.UUID | str, message_ids: Iterable[uuid.UUID]
) -> list[str]:
    """Those of ``message_ids`` that are not messages of the conversation."""
    wanted = set(message_ids)
    found = set(
        Message.objects.filter(conversation_id=conversation_id, pk__in=wanted).values_list(
            "pk", flat=True
        )
    )
    return sorted(str(pk) for pk in wanted - found)


def users_sharing_conversations(*, user_id: int | str) -> set[str]:
    """Ids of users who share at least one conversation with ``user_id`` (self excluded)."""
    return {
        str(pk)
        for pk in Participant.objects.filter(conversation__memberships__user_id=user_id)
        .exclude(user_id=user_id)
        .values_list("user_id", flat=True)
        .distinct()
    }


def presence_audience(user_id: str) -> list[str]:
    """Who hears about ``user_id``'s presence: themself and everyone sharing a conversation.

    Named in ``REALTIME["PRESENCE_AUDIENCE"]`` so that presence never imports chat.
    """
    return sorted({str(user_id)} | users_sharing_conversations(user_id=user_id))


def existing_user_ids(*, user_ids: Iterable[str]) -> set[str]:
    numeric = [int(uid) for uid in user_ids if str(uid).isdigit()]
    return {
        str(pk)
        for pk in get_user_model()
        .objects.filter(pk__in=numeric, is_active=True)
        .values_list("pk", flat=True)
    }
