"""The one place that emits real-time events (docs/events.md, docs/delivery.md).

Services call ``frame_emit_on_commit`` after writing; nothing else calls ``group_send`` with
an event. An event is one JSON frame of the wire contract, built from its type in
``chat.event_types`` (which stamps a unique ``event_id`` and a ``ts``), carried by a
``realtime.event`` layer message (``chat.layer_messages``), and sent to channel-layer groups:

- ``user.<user_id>``: every socket of one user (``connections.control.user_group``; that app
  owns the group and its control messages, chat adds ``realtime.join`` to it);
- ``conv.<conversation_id>``: every socket of every participant of a conversation.

A socket may hear one event through several groups (a presence change reaches it through
every conversation it shares with the user); it gets each event id once, as ``chat.dedup``
says (the message carries the event id as its ``dedup_key``). ``exclude_channel`` keeps the
event from the socket whose frame caused it (that socket gets an ``ack`` instead). Durable
events were already written to the event log with their ``seq`` by the service; the frame
emitted here is the logged one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from chat.event_types import AnyEvent, event_frame
from chat.layer_messages import realtime_event_message, realtime_join_message
from connections.control import control_send

logger = logging.getLogger(__name__)


def conversation_group(conversation_id: object) -> str:
    return f"conv.{conversation_id}"


async def frame_emit(
    *,
    frame: dict[str, Any],
    groups: Iterable[str],
    exclude_channel: str | None = None,
    ephemeral: bool = False,
) -> None:
    """Send one built frame to every socket in ``groups`` (each socket at most once)."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = realtime_event_message(frame, exclude_channel=exclude_channel, ephemeral=ephemeral)
    for group in dict.fromkeys(groups):
        # The layer never raises on a Redis failure; anything else is a bug worth logging
        # without losing the other groups' delivery (durable events heal from the log).
        try:
            await layer.group_send(group, message)
        except Exception:
            logger.exception("event emit failed for group=%s type=%s", group, frame.get("type"))


async def event_emit(
    *,
    event: AnyEvent,
    groups: Iterable[str],
    exclude_channel: str | None = None,
    ephemeral: bool = False,
) -> dict[str, Any]:
    """Build an ephemeral (unlogged) event's frame and send it; returns the frame."""
    frame = event_frame(event)
    await frame_emit(
        frame=frame, groups=groups, exclude_channel=exclude_channel, ephemeral=ephemeral
    )
    return frame


def frame_emit_on_commit(
    *, frame: dict[str, Any], groups: Iterable[str], exclude_channel: str | None = None
) -> None:
    """Emit a logged durable frame once the current transaction commits."""
    group_list = list(groups)

    def _emit() -> None:
        async_to_sync(frame_emit)(frame=frame, groups=group_list, exclude_channel=exclude_channel)

    transaction.on_commit(_emit)


def join_send_on_commit(*, user_id: object, conversation_id: str, seq: int) -> None:
    """Once the transaction commits, make every socket of ``user_id`` follow a conversation
    from ``seq`` on (``realtime.join``: the conversation's group, before any of its events)."""
    message = realtime_join_message(conversation_id=conversation_id, seq=seq)
    transaction.on_commit(lambda: async_to_sync(control_send)(user_id=user_id, message=message))
