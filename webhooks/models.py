"""The outbox of webhook events and its counters. See docs/webhooks.md.

A row is one event owed to one URL. It is written in the transaction of the change that
caused it and deleted once a receiver answered 2xx for its batch (or it expired), so the
table holds only what is still owed.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

# Not yet in a batch, and free to be sent.
NEW_EVENT = Q(batch_id__isnull=True, held=False, unresolved=False)
# Holds back its stream's later events.
IN_FLIGHT = Q(batch_id__isnull=False) | Q(held=True) | Q(unresolved=True)


class OutboxEvent(models.Model):
    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField()
    name = models.CharField(max_length=32)
    # Events of one stream (a conversation, a user) are sent in ``id`` order: a batch never
    # overtakes an earlier undelivered one of its stream. Empty: no order owed.
    stream = models.CharField(max_length=64, default="", blank=True)
    payload = models.JSONField()
    target = models.TextField()
    created_at = models.DateTimeField()
    # Set when the row is first claimed; a retry resends the same batch under the same id.
    batch_id = models.UUIDField(null=True, blank=True)
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    lease_until = models.DateTimeField(null=True, blank=True)
    # Written before the change it announces is known to have landed elsewhere (presence in
    # Firestore); never sent until released.
    held = models.BooleanField(default=False)
    # ``message.offline``: the recipients are still candidates, to be checked against the
    # connection registry before the event is sent.
    unresolved = models.BooleanField(default=False)

    class Meta:
        db_table = "webhooks_outbox"
        # Each index is partial, so that recording an event (on a message's write path)
        # maintains as few as possible: a new event enters the primary key and "new" (or
        # "in flight", while unresolved); the others hold only batched or held events.
        indexes = [
            # The oldest new events, in order.
            models.Index(fields=["target", "id"], condition=NEW_EVENT, name="webhooks_outbox_new"),
            # The streams with something in flight, and the unresolved events.
            models.Index(
                fields=["target", "stream"], condition=IN_FLIGHT, name="webhooks_outbox_in_flight"
            ),
            # Due retries, and a batch's rows.
            models.Index(
                fields=["target", "next_attempt_at"],
                condition=Q(batch_id__isnull=False),
                name="webhooks_outbox_retry",
            ),
            models.Index(
                fields=["batch_id"],
                condition=Q(batch_id__isnull=False),
                name="webhooks_outbox_batch",
            ),
            # Held presence events, by id (release, discard, settle).
            models.Index(fields=["event_id"], condition=Q(held=True), name="webhooks_outbox_held"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.event_id} -> {self.target}"


class WebhookCounter(models.Model):
    """Totals shared by every instance (``delivered``, ``failed_attempts``, ``expired``).

    The ``claim`` row is not a total: claims update it first, which serializes them (a row
    lock on PostgreSQL, the write lock on SQLite) so two instances never interleave one
    stream's batches.
    """

    name = models.CharField(max_length=32, primary_key=True)
    value = models.BigIntegerField(default=0)

    class Meta:
        db_table = "webhooks_counter"

    def __str__(self) -> str:
        return f"{self.name}={self.value}"
