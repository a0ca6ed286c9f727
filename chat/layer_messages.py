"""Chat's layer messages as declared types with a version (docs/channel-layer.md, "Layer
messages"; the rule of versions is ``connections.layer_messages``'s).

- ``realtime.event`` (``RealtimeEvent``): one event frame for the sockets of a group, or of
  one channel (healing); sent per delivery, so building one is a dict and nothing more;
- ``realtime.join`` (``RealtimeJoin``): follow one more conversation from ``seq`` on.

Each is built by its function here and nowhere else, and read by the live socket through its
type (``chat.live_socket``, ``chat.delivery``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final, Literal, TypedDict

from connections.layer_messages import CONTROL_VERSIONS

EVENT_MESSAGE_TYPE: Final = "realtime.event"
JOIN_MESSAGE_TYPE: Final = "realtime.join"

REALTIME_EVENT_VERSION: Final = 1
REALTIME_JOIN_VERSION: Final = 1


class _RealtimeEventFields(TypedDict):
    type: Literal["realtime.event"]
    v: int
    # The frame as the client gets it (``chat.event_types``); never looked into on the way.
    event: dict[str, Any]
    # The socket whose frame caused the event: it got an ``ack`` instead.
    exclude_channel: str | None
    # The event id: the layer hands a channel a given key once.
    dedup_key: str
    # Epoch seconds of the emission (or of the logging, when healed), to time the delivery.
    emitted_at: float


# ``total=False`` rather than ``NotRequired``: with postponed annotations the running
# interpreter could not tell the optional key from the others.
class RealtimeEvent(_RealtimeEventFields, total=False):
    # Typing: the layer may shed it first from a full queue. Absent unless True.
    ephemeral: bool


class RealtimeJoin(TypedDict):
    type: Literal["realtime.join"]
    v: int
    conversation_id: str
    seq: int


# The version of each message a live socket reads: chat's and connections' control messages.
SOCKET_VERSIONS: Final[Mapping[str, int]] = {
    **CONTROL_VERSIONS,
    EVENT_MESSAGE_TYPE: REALTIME_EVENT_VERSION,
    JOIN_MESSAGE_TYPE: REALTIME_JOIN_VERSION,
}


def realtime_event_message(
    frame: dict[str, Any],
    *,
    exclude_channel: str | None = None,
    ephemeral: bool = False,
    emitted_at: float | None = None,
) -> RealtimeEvent:
    """The layer message that carries ``frame`` to sockets.

    ``emitted_at`` (epoch seconds, now unless given) travels beside the frame, not in it, so
    the socket that sends it can observe the delivery latency (``chat.metrics``) without
    parsing the frame's ``ts``."""
    message: RealtimeEvent = {
        "type": EVENT_MESSAGE_TYPE,
        "v": REALTIME_EVENT_VERSION,
        "event": frame,
        "exclude_channel": exclude_channel,
        "dedup_key": frame["event_id"],
        "emitted_at": time.time() if emitted_at is None else emitted_at,
    }
    if ephemeral:
        message["ephemeral"] = True
    return message


def realtime_join_message(*, conversation_id: str, seq: int) -> RealtimeJoin:
    return {
        "type": JOIN_MESSAGE_TYPE,
        "v": REALTIME_JOIN_VERSION,
        "conversation_id": conversation_id,
        "seq": seq,
    }
