"""Chat's input and output serializers, shared by REST views and WebSocket frames.

A WebSocket frame is validated by the same Input serializer as its REST twin, through the same
``realtime_project.inputs.input_validate``, so both paths accept and refuse exactly the same
data with the same field errors. A ``*FrameSerializer`` is its REST twin plus the
``conversation_id`` that REST carries in the path. The ``status`` input is presence's
(``presence.serializers``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rest_framework import serializers

from chat.event_types import MessageBody
from realtime_project.conf import realtime_settings

MAX_MESSAGE_IDS = 500


class StrictBooleanField(serializers.BooleanField):
    """Only JSON ``true``/``false``: ``"yes"`` or ``1`` is a client bug worth a 400."""

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):
            return data
        self.fail("invalid", input=data)
        raise AssertionError  # fail() raises


class StrictCharField(serializers.CharField):
    """Only JSON strings: DRF would turn ``42`` into ``"42"``, hiding a client bug."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class StrictIntegerField(serializers.IntegerField):
    """Only JSON integers: ``"1"`` or ``true`` where a number belongs is a client bug."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class TypingInputSerializer(serializers.Serializer[Any]):
    is_typing = StrictBooleanField()


class TypingFrameSerializer(TypingInputSerializer):
    conversation_id = serializers.UUIDField()


class TypingOutputSerializer(serializers.Serializer[Any]):
    conversation_id = serializers.CharField()
    is_typing = serializers.BooleanField()


class ReadInputSerializer(serializers.Serializer[Any]):
    conversation_id = serializers.UUIDField()
    message_ids = serializers.ListField(
        child=serializers.UUIDField(), min_length=1, max_length=MAX_MESSAGE_IDS
    )


class ReadOutputSerializer(serializers.Serializer[Any]):
    conversation_id = serializers.CharField()
    message_ids = serializers.ListField(child=serializers.CharField())
    read_at = serializers.DateTimeField()


class MessageInputSerializer(serializers.Serializer[Any]):
    body = StrictCharField(trim_whitespace=False)
    # The sender's idempotency key: a resend with the same one creates nothing.
    client_id = StrictCharField(max_length=64, required=False, allow_blank=False)

    def validate_body(self, value: str) -> str:
        limit = realtime_settings.MESSAGE_MAX_LENGTH
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.")
        if len(value) > limit:
            raise serializers.ValidationError(
                f"Ensure this field has no more than {limit} characters."
            )
        return value


class MessageFrameSerializer(MessageInputSerializer):
    conversation_id = serializers.UUIDField()


class MessageOutputSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    conversation_id = serializers.CharField()
    sender_id = serializers.CharField()
    body = serializers.CharField()
    created_at = serializers.DateTimeField()
    seq = serializers.IntegerField()
    client_id = serializers.CharField(allow_null=True)


class ResumeFrameSerializer(serializers.Serializer[Any]):
    """``{"positions": {"<conversation_id>": <last seq the client has>, ...}}``."""

    positions = serializers.DictField(child=StrictIntegerField(min_value=0))

    def validate_positions(self, value: dict[str, int]) -> dict[str, int]:
        limit = realtime_settings.USER_MAX_CONVERSATIONS
        if len(value) > limit:
            raise serializers.ValidationError(f"At most {limit} conversations.")
        return value


class EventsQuerySerializer(serializers.Serializer[Any]):
    after_seq = serializers.IntegerField(min_value=0, default=0)


class EventsOutputSerializer(serializers.Serializer[Any]):
    events = serializers.ListField(child=serializers.DictField())
    last_seq = serializers.IntegerField()


class ParticipantsInputSerializer(serializers.Serializer[Any]):
    user_ids = serializers.ListField(
        child=serializers.CharField(max_length=32), min_length=1, max_length=1000
    )


class ParticipantOutputSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    username = serializers.CharField()


class ConversationInputSerializer(serializers.Serializer[Any]):
    title = StrictCharField(max_length=200, allow_blank=True, default="")
    participant_ids = serializers.ListField(
        child=serializers.CharField(max_length=32), max_length=1000, default=list
    )


class ConversationOutputSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    title = serializers.CharField()
    participant_ids = serializers.ListField(child=serializers.CharField())
    participants = ParticipantOutputSerializer(many=True)
    created_at = serializers.DateTimeField()
    last_seq = serializers.IntegerField()


def message_body(message: Any) -> MessageBody:
    """A message as the wire shows it (REST 201 body, ``message`` event, ``ack``)."""
    return MessageBody(
        id=str(message.id),
        conversation_id=str(message.conversation_id),
        sender_id=str(message.sender_id),
        body=message.body,
        created_at=message.created_at.isoformat(),
        seq=int(message.seq),
        client_id=message.client_id,
    )


def message_to_dict(message: Any) -> dict[str, Any]:
    return dataclasses.asdict(message_body(message))
