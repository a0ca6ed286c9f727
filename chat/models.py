"""Conversations, their participants (with read state), messages and the durable event log.

Every durable event of a conversation (``message``, ``read``, ``member``) is a row of
``Event`` with the conversation's next ``seq``, written in the same transaction as the change
itself; resume and healing read it (docs/delivery.md).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    participants = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Participant", related_name="conversations"
    )
    # The seq of the conversation's newest durable event (0: none yet). Incremented under the
    # row's lock by the transaction that writes the event, so seqs follow commit order.
    last_seq = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["-created_at", "-id"], name="conv_created_idx")]

    def __str__(self) -> str:
        return self.title or str(self.id)


class Participant(models.Model):
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    joined_at = models.DateTimeField(auto_now_add=True)
    # Read state: the newest message this participant has read, and when.
    last_read_message = models.ForeignKey(
        "Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    last_read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "user"], name="unique_participant")
        ]
        # "A user's conversations" walks this index from the user's side.
        indexes = [models.Index(fields=["user", "conversation"], name="participant_user_idx")]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.conversation_id}"


class Message(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="messages"
    )
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    # The seq of this message's ``message`` event in its conversation.
    seq = models.BigIntegerField(default=0)
    # The sender's own idempotency key: a resend with the same one creates nothing. NULL, not
    # "", for "none given", so that the unique constraint leaves such messages alone.
    client_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["sender", "client_id"],
                condition=models.Q(client_id__isnull=False),
                name="unique_message_client_id",
            )
        ]
        # "A conversation's messages, newest first" is one index range scan.
        indexes = [
            models.Index(
                fields=["conversation", "-created_at", "-id"], name="message_conv_created_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.sender_id}: {self.body[:40]}"


class Event(models.Model):
    """One durable event of a conversation, as the wire shows it, in ``seq`` order."""

    class Type(models.TextChoices):
        MESSAGE = "message"
        READ = "read"
        MEMBER = "member"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="events")
    seq = models.BigIntegerField()
    type = models.CharField(max_length=16, choices=Type.choices)
    # The whole server -> client frame (event_id, ts, seq and the type's fields): a replay
    # sends exactly what the live delivery sent.
    frame = models.JSONField()
    # The channel of the socket whose frame caused the event: it got an ``ack`` instead, and
    # healing must not send the event back to it either.
    origin_channel = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["conversation", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="unique_event_seq")
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id}#{self.seq} {self.type}"
