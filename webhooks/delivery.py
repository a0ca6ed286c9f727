"""The outbox's database side: claims, outcomes, resolution, stats. See docs/webhooks.md.

Everything here is synchronous Django ORM run on the database threads; the sender
(``webhooks.sender``) does the network calls between these steps, never inside a transaction.
Time is a parameter everywhere, so tests move it instead of waiting.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count, F, Min, Q, Subquery, TextField
from django.db.models.functions import Cast

from webhooks.models import IN_FLIGHT, NEW_EVENT, OutboxEvent, WebhookCounter
from webhooks.outbox import CANDIDATES_KEY

COUNTERS = ("delivered", "failed_attempts", "expired")
_CLAIM_ROW = "claim"


@dataclass(frozen=True)
class Batch:
    batch_id: uuid.UUID
    target: str
    # Each event as JSON text, spliced from the stored payload's text: a batch is sent
    # without decoding and re-encoding every payload.
    events: list[str]
    row_ids: list[int]
    oldest: datetime
    attempts: int


def _lock_claims() -> None:
    # Claims run one at a time across instances: the first write of the transaction takes
    # this row's lock (PostgreSQL) or the database's write lock (SQLite), so a claim always
    # sees the leases of the one before it and a stream's batches never interleave.
    updated = WebhookCounter.objects.filter(name=_CLAIM_ROW).update(value=F("value") + 1)
    if not updated:
        WebhookCounter.objects.get_or_create(name=_CLAIM_ROW)
        WebhookCounter.objects.filter(name=_CLAIM_ROW).update(value=F("value") + 1)


def _free(now: datetime) -> Q:
    return Q(lease_until__isnull=True) | Q(lease_until__lt=now)


def batch_claim(*, target: str, now: datetime, size: int, lease_seconds: float) -> Batch | None:
    """Lease the next batch for ``target``: a due retry first, else the oldest new events.

    A new event is taken only when no event of its stream is held, unresolved or sits in a
    batch not yet delivered, so within a stream batches go out, and are retried, in order.
    """
    lease = now + timedelta(seconds=lease_seconds)
    # An idle sender polls: a plain read first, so that polling takes no lock and writes
    # nothing (the claim below may still find the work taken by another instance).
    retries = OutboxEvent.objects.filter(
        target=target, batch_id__isnull=False, held=False, next_attempt_at__lte=now
    )
    if not OutboxEvent.objects.filter(NEW_EVENT, target=target).exists() and not retries.exists():
        return None
    with transaction.atomic():
        _lock_claims()
        retry = (
            OutboxEvent.objects.filter(
                target=target, batch_id__isnull=False, held=False, next_attempt_at__lte=now
            )
            .filter(_free(now))
            .order_by("id")
            .values_list("batch_id", flat=True)
            .first()
        )
        fields = ("id", "event_id", "name", "payload_text", "created_at", "attempts")
        outbox = OutboxEvent.objects.annotate(payload_text=Cast("payload", TextField()))
        if retry is not None:
            batch_id = retry
            OutboxEvent.objects.filter(batch_id=batch_id).update(lease_until=lease)
            rows = list(outbox.filter(batch_id=batch_id).order_by("id").values(*fields))
        else:
            # A stream with anything in flight (in a batch not yet delivered), held or not yet
            # resolved waits for it: its later events must not overtake. The set of such
            # streams is small, so this is one hashed look-up per candidate row.
            waiting = (
                OutboxEvent.objects.filter(IN_FLIGHT, target=target)
                .exclude(stream="")
                .values("stream")
            )
            rows = list(
                outbox.filter(NEW_EVENT, target=target)
                .exclude(stream__in=Subquery(waiting))
                .order_by("id")
                .values(*fields)[:size]
            )
            if not rows:
                return None
            batch_id = uuid.uuid4()
            OutboxEvent.objects.filter(id__in=[r["id"] for r in rows]).update(
                batch_id=batch_id, lease_until=lease, next_attempt_at=now
            )
    if not rows:
        return None
    return Batch(
        batch_id=batch_id,
        target=target,
        events=[event_json(r["name"], r["event_id"], r["payload_text"]) for r in rows],
        row_ids=[r["id"] for r in rows],
        oldest=min(r["created_at"] for r in rows),
        attempts=max(r["attempts"] for r in rows),
    )


def event_json(name: str, event_id: uuid.UUID, payload_text: str) -> str:
    """``{"name": ..., "id": ..., <the payload's fields>}`` from the payload's stored text."""
    head = f'{{"name":{json.dumps(name)},"id":"{event_id}"'
    inner = payload_text.strip()[1:-1].strip()
    return f"{head},{inner}}}" if inner else f"{head}}}"


def _count(name: str, amount: int) -> None:
    if amount <= 0:
        return
    if not WebhookCounter.objects.filter(name=name).update(value=F("value") + amount):
        WebhookCounter.objects.get_or_create(name=name)
        WebhookCounter.objects.filter(name=name).update(value=F("value") + amount)


def batch_delivered(*, batch: Batch) -> int:
    """The receiver took the batch: forget its rows, count them once (whoever sent them)."""
    with transaction.atomic():
        deleted, _ = OutboxEvent.objects.filter(id__in=batch.row_ids).delete()
        _count("delivered", deleted)
    return deleted


def backoff_seconds(*, attempts: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Full jitter: uniform over [0, min(cap, base * 2^attempts)]."""
    return float(rand()) * min(cap, base * (2.0 ** min(attempts, 62)))


def batch_failed(
    *,
    batch: Batch,
    now: datetime,
    max_age_seconds: float,
    base_seconds: float,
    cap_seconds: float,
    rand: Callable[[], float] = random.random,
) -> int:
    """Count a failed call; retry the batch later, or expire it past the maximum age.

    Returns the number of events expired (0 when the batch will be retried).
    """
    with transaction.atomic():
        _count("failed_attempts", 1)
        if (now - batch.oldest).total_seconds() >= max_age_seconds:
            expired, _ = OutboxEvent.objects.filter(id__in=batch.row_ids).delete()
            _count("expired", expired)
            return expired
        delay = backoff_seconds(
            attempts=batch.attempts, base=base_seconds, cap=cap_seconds, rand=rand
        )
        OutboxEvent.objects.filter(id__in=batch.row_ids).update(
            attempts=F("attempts") + 1,
            next_attempt_at=now + timedelta(seconds=delay),
            lease_until=None,
        )
    return 0


def unresolved_events(*, limit: int) -> dict[uuid.UUID, list[str]]:
    """``message.offline`` events whose recipients are still candidates, oldest first."""
    # IN_FLIGHT as well: it is implied, and it lets the database use its partial index.
    rows = (
        OutboxEvent.objects.filter(IN_FLIGHT, unresolved=True)
        .order_by("id")
        .values_list("event_id", "payload")[:limit]
    )
    return {event_id: list(payload.get(CANDIDATES_KEY, [])) for event_id, payload in rows}


def events_resolved(*, offline: dict[uuid.UUID, list[str]]) -> None:
    """Store each event's checked recipients; an event with none is owed to nobody."""
    with transaction.atomic():
        rows = OutboxEvent.objects.filter(
            IN_FLIGHT, unresolved=True, event_id__in=list(offline)
        ).only("id", "event_id", "payload")
        keep: list[OutboxEvent] = []
        drop: list[int] = []
        for row in rows:
            user_ids = offline[row.event_id]
            if not user_ids:
                drop.append(row.id)
                continue
            payload = dict(row.payload)
            payload.pop(CANDIDATES_KEY, None)
            payload["user_ids"] = user_ids
            row.payload = payload
            row.unresolved = False
            keep.append(row)
        if drop:
            OutboxEvent.objects.filter(id__in=drop).delete()
        if keep:
            OutboxEvent.objects.bulk_update(keep, ["payload", "unresolved"])


def outbox_stats(*, now: datetime) -> dict[str, Any]:
    """``GET /api/webhooks/stats``: what is owed, and the totals since the outbox began."""
    owed = OutboxEvent.objects.filter(held=False).aggregate(
        pending=Count("id"), oldest=Min("created_at")
    )
    totals = dict(WebhookCounter.objects.filter(name__in=COUNTERS).values_list("name", "value"))
    oldest: datetime | None = owed["oldest"]
    return {
        "pending": owed["pending"],
        "oldest_pending_age_seconds": (
            max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        ),
        **{name: int(totals.get(name, 0)) for name in COUNTERS},
    }
