"""The one place that emits real-time events (docs/events.md).

Services call ``event_emit_on_commit`` after writing; nothing else calls ``group_send`` with
an event. An event is one JSON frame of the wire contract, stamped here with a unique
``event_id`` and a ``ts``, and sent to channel-layer groups:

- ``user.<user_id>``: every socket of one user (also carries control messages);
- ``conv.<conversation_id>``: every socket of every participant of a conversation.

A socket may hear one event through several groups (a presence change reaches it through
every conversation it shares with the user); the consumer drops repeated ``event_id``s.
``exclude_channel`` keeps the event from the socket whose frame caused it (that socket gets
an ``ack`` instead).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

EVENT_MESSAGE_TYPE = "realtime.event"
JOIN_MESSAGE_TYPE = "realtime.join"
CLOSE_MESSAGE_TYPE = "connection.close"


def user_group(user_id: object) -> str:
    return f"user.{user_id}"


def conversation_group(conversation_id: object) -> str:
    return f"conv.{conversation_id}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def event_build(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A server -> client frame with a fresh ``event_id`` and ``ts``."""
    return {"type": event_type, "event_id": uuid.uuid4().hex, "ts": now_iso(), **payload}


async def event_emit(
    *,
    event_type: str,
    payload: dict[str, Any],
    groups: Iterable[str],
    exclude_channel: str | None = None,
    ephemeral: bool = False,
) -> dict[str, Any]:
    """Send one event to every socket in ``groups`` (each socket at most once)."""
    event = event_build(event_type, payload)
    message: dict[str, Any] = {
        "type": EVENT_MESSAGE_TYPE,
        "event": event,
        "exclude_channel": exclude_channel,
        "dedup_key": event["event_id"],
    }
    if ephemeral:
        message["ephemeral"] = True
    layer = get_channel_layer()
    if layer is None:
        return event
    for group in dict.fromkeys(groups):
        # The layer never raises on a Redis failure; anything else is a bug worth logging
        # without losing the other groups' delivery.
        try:
            await layer.group_send(group, message)
        except Exception:
            logger.exception("event_emit failed for group=%s type=%s", group, event_type)
    return event


def event_emit_on_commit(
    *,
    event_type: str,
    payload: dict[str, Any],
    groups: Iterable[str],
    exclude_channel: str | None = None,
    ephemeral: bool = False,
) -> None:
    """Emit once the current transaction commits (at once outside a transaction)."""
    group_list = list(groups)

    def _emit() -> None:
        async_to_sync(event_emit)(
            event_type=event_type,
            payload=payload,
            groups=group_list,
            exclude_channel=exclude_channel,
            ephemeral=ephemeral,
        )

    transaction.on_commit(_emit)


async def control_send(*, group: str, message: dict[str, Any]) -> None:
    """A control message to sockets (join a conversation, close), not a client frame."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(group, message)


def control_send_on_commit(*, group: str, message: dict[str, Any]) -> None:
    transaction.on_commit(lambda: async_to_sync(control_send)(group=group, message=message))
