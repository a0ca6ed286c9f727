"""Recording webhook events in the caller's transaction. See docs/webhooks.md.

The caller (a service) decides what happened; this module only stores what it is told, one
row per configured URL, in whatever transaction the caller holds. With no ``WEBHOOK_URLS``
nothing is written and nothing is built: every entry point returns at its first line.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from realtime_project.conf import realtime_settings
from webhooks.models import OutboxEvent

# The payload key under which ``message.offline`` keeps its candidate recipients until the
# sender has checked them against the registry (then it becomes ``user_ids``).
CANDIDATES_KEY = "candidate_ids"


def webhooks_enabled() -> bool:
    return bool(realtime_settings.WEBHOOK_URLS)


def outbox_record(
    *,
    name: str,
    payload: Mapping[str, Any],
    stream: str = "",
    held: bool = False,
    unresolved: bool = False,
    at: datetime | None = None,
    event_id: uuid.UUID | None = None,
) -> uuid.UUID | None:
    """Owe ``name`` with ``payload`` to every URL; the event's id, or None when disabled.

    Call it inside the transaction of the change it announces: the rows commit or roll back
    with it.
    """
    urls = realtime_settings.WEBHOOK_URLS
    if not urls:
        return None
    event_id = event_id or uuid.uuid4()
    now = at or datetime.now(UTC)
    OutboxEvent.objects.bulk_create(
        [
            OutboxEvent(
                event_id=event_id,
                name=name,
                stream=stream,
                payload=dict(payload),
                target=url,
                created_at=now,
                next_attempt_at=now,
                held=held,
                unresolved=unresolved,
            )
            for url in urls
        ]
    )
    return event_id


def outbox_hold_once(
    *, event_id: uuid.UUID, name: str, payload: Mapping[str, Any], stream: str = ""
) -> None:
    """Record a held event unless one with this id is already recorded (a retried write)."""
    if not realtime_settings.WEBHOOK_URLS:
        return
    if not OutboxEvent.objects.filter(event_id=event_id, held=True).exists():
        outbox_record(name=name, payload=payload, stream=stream, held=True, event_id=event_id)


def outbox_release(*, event_id: uuid.UUID) -> None:
    """Let a held event be sent: what it announces has landed."""
    OutboxEvent.objects.filter(event_id=event_id, held=True).update(held=False)


def outbox_discard(*, event_id: uuid.UUID) -> None:
    """Forget a held event: what it announces did not happen."""
    OutboxEvent.objects.filter(event_id=event_id, held=True).delete()


def outbox_held(
    *, older_than: datetime, limit: int = 100
) -> list[tuple[uuid.UUID, dict[str, Any]]]:
    """Held events left behind (their writer died before releasing them), oldest first."""
    rows = (
        OutboxEvent.objects.filter(held=True, created_at__lt=older_than)
        .order_by("id")
        .values_list("event_id", "payload")[: limit * max(1, len(realtime_settings.WEBHOOK_URLS))]
    )
    seen: dict[uuid.UUID, dict[str, Any]] = {}
    for event_id, payload in rows:
        seen.setdefault(event_id, payload)
    return list(seen.items())[:limit]


# PostgreSQL: the outbox insert as a data-modifying CTE for a caller's single statement (a
# message's write is one statement; a second round trip would cost more than the event). The
# caller supplies the row source (a CTE of its own that yields one row when the change
# happened, none when it did not), the stream and the payload as SQL over that source, and
# merges ``outbox_statement_params`` into its parameters.
_CTE = """INSERT INTO {table} (event_id, name, stream, payload, target, created_at,
    next_attempt_at, attempts, held, unresolved)
SELECT %(wh_event_id)s, %(wh_name)s, {stream}, {payload}, t.url, %(wh_at)s, %(wh_at)s, 0, false,
    {unresolved}
FROM {source} CROSS JOIN unnest(%(wh_urls)s::text[]) AS t(url)
WHERE {where}"""


def outbox_statement_cte(
    *, source: str, stream: str, payload: str, unresolved: bool, where: str = "true"
) -> str:
    """The ``INSERT ... SELECT`` for a CTE (``, w AS (<this>)``) of the caller's statement."""
    return _CTE.format(
        table=OutboxEvent._meta.db_table,
        stream=stream,
        payload=payload,
        source=source,
        where=where,
        unresolved="true" if unresolved else "false",
    )


def outbox_statement_params(*, name: str, at: datetime) -> dict[str, Any]:
    return {
        "wh_event_id": uuid.uuid4(),
        "wh_name": name,
        "wh_at": at,
        "wh_urls": list(realtime_settings.WEBHOOK_URLS),
    }
