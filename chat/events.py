"""The one place that emits real-time events (docs/events.md, docs/delivery.md).

Services call ``frame_emit_on_commit`` after writing; nothing else calls ``group_send`` with
an event. An event is one JSON frame of the wire contract, built from its type in
``chat.event_types`` (which stamps a unique ``event_id`` and a ``ts``), and sent to
channel-layer groups:

- ``user.<user_id>``: every socket of one user (also carries control messages);
- ``conv.<conversation_id>``: every socket of every participant of a conversation.

A socket may hear one event through several groups (a presence change reaches it through
every conversation it shares with the user); the layer delivers a given ``dedup_key`` (the
event id) to a channel once. ``exclude_channel`` keeps the event from the socket whose frame
caused it (that socket gets an ``ack`` instead). Durable events were already written to the
event log with their ``seq`` by the service; the frame emitted here is the logged one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from chat.event_types import AnyEvent, event_frame

logger = logging.getLogger(__name__)

EVENT_MESSAGE_TYPE = "realtime.event"
JOIN_MESSAGE_TYPE = "realtime.join"
CLOSE_MESSAGE_TYPE = "connection.close"


def user_group(user_id: object) -> str:
    return f"user.{user_id}"


def conversation_group(conversation_id: object) -> str:
    return f"conv.{conversation_id}"


def event_message(
    frame: dict[str, Any], *, exclude_channel: str | None = None, ephemeral: bool = False
) -> dict[str, Any]:
    """The channel-layer message that carries ``frame`` to sockets."""
    message: dict[str, Any] = {
        "type": EVENT_MESSAGE_TYPE,
        "event": frame,
        "exclude_channel": exclude_channel,
        "dedup_key": frame["event_id"],
    }
    if ephemeral:
        message["ephemeral"] = True
    return message


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
    message = event_message(frame, exclude_channel=exclude_channel, ephemeral=ephemeral)
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


async def control_send(*, group: str, message: dict[str, Any]) -> None:
    """A control message to sockets (join a conversation, close), not a client frame."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(group, message)


def control_send_on_commit(*, group: str, message: dict[str, Any]) -> None:
    transaction.on_commit(lambda: async_to_sync(control_send)(group=group, message=message))
