"""Control messages as declared types with a version, and how a receiver reads a version.

Design note: docs/channel-layer.md ("Layer messages"). What the project's processes send each
other through the channel layer are plain dicts with a ``"type"`` (Channels' interface,
msgpack on the wire); each is declared here, or in ``chat.layer_messages`` for chat's own,
as a ``TypedDict`` built by one function, and carries its type's version as ``"v"``.

- ``connection.close`` (``ConnectionClose``), ``connection.revoke`` (``ConnectionRevoke``):
  connections' control messages on ``user.<id>`` (``connections.control``);
- ``channel.overflow`` (``ChannelOverflow``): put by the layer itself in a socket's full queue
  (``realtime_layer.queues.OVERFLOW_MESSAGE``); it never leaves the process, so it has no
  version.

A message without ``"v"`` is version 1 (the releases before versions sent none). A receiver
reads a message of a version up to its own for that type (``layer_message_readable``); a newer
one, or an unknown type that carries a version, is from a newer release: it is ignored,
counted (``realtime_messages_newer_ignored_total``) and logged once per type and
version, never misread and never a crash. A release that changes what a message means raises
that type's version, and ships its readers before its writers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final, Literal, TypedDict

from prometheus_client import Counter

from connections.metrics import registry

logger = logging.getLogger(__name__)

VERSION_KEY: Final = "v"

CLOSE_MESSAGE_TYPE: Final = "connection.close"
REVOKE_MESSAGE_TYPE: Final = "connection.revoke"
OVERFLOW_MESSAGE_TYPE: Final = "channel.overflow"

CONNECTION_CLOSE_VERSION: Final = 1
CONNECTION_REVOKE_VERSION: Final = 1


class ConnectionClose(TypedDict):
    """Close every socket of the user, with ``code``."""

    type: Literal["connection.close"]
    v: int
    code: int


class ConnectionRevoke(TypedDict):
    """Close (4401) the user's sockets holding ``token_hash`` (a token's or a session's
    digest), or all of them for ``None``; each instance's token cache drops it too."""

    type: Literal["connection.revoke"]
    v: int
    token_hash: str | None
    user_id: str


class ChannelOverflow(TypedDict):
    """The layer could not queue a message for this channel (built by the layer, unversioned)."""

    type: Literal["channel.overflow"]


# The version of each control message this release reads.
CONTROL_VERSIONS: Final[Mapping[str, int]] = {
    CLOSE_MESSAGE_TYPE: CONNECTION_CLOSE_VERSION,
    REVOKE_MESSAGE_TYPE: CONNECTION_REVOKE_VERSION,
    OVERFLOW_MESSAGE_TYPE: 1,
}


def connection_close_message(*, code: int) -> ConnectionClose:
    return {"type": CLOSE_MESSAGE_TYPE, "v": CONNECTION_CLOSE_VERSION, "code": code}


def connection_revoke_message(*, user_id: object, token_hash: str | None) -> ConnectionRevoke:
    return {
        "type": REVOKE_MESSAGE_TYPE,
        "v": CONNECTION_REVOKE_VERSION,
        "token_hash": token_hash,
        "user_id": str(user_id),
    }


def layer_message_readable(message: Mapping[str, Any], versions: Mapping[str, int]) -> bool:
    """Whether a receiver that reads ``versions`` (type -> newest version it knows) can read
    ``message``; when not, the message is counted and logged (once per type and version).

    Every message a socket receives passes here: one lookup and one comparison. A message
    without a version passes whatever its type (version 1, or an ASGI message: not ours)."""
    version = message.get(VERSION_KEY)
    if version is None:
        return True
    known = versions.get(message.get("type", ""))
    if known is not None and type(version) is int and version <= known:
        return True
    _newer_ignored(message.get("type"), version)
    return False


# Distinct (type, version) pairs logged; past the bound (a peer sending nonsense) only counted.
_LOGGED_MAX: Final = 256
_logged: set[tuple[str, str]] = set()


def _newer_ignored(message_type: object, version: object) -> None:
    type_label, version_label = str(message_type)[:64], str(version)[:16]
    _newer.labels(type=type_label, version=version_label).inc()
    key = (type_label, version_label)
    if key in _logged or len(_logged) >= _LOGGED_MAX:
        return
    _logged.add(key)
    logger.warning(
        "ignoring layer messages of type=%s version=%s: newer than this release reads "
        "(a deployment rolling; counted in realtime_messages_newer_ignored_total)",
        type_label,
        version_label,
    )


_newer = Counter(
    "realtime_messages_newer_ignored",
    "Layer messages (events, joins, control) of a version newer than this instance reads, or "
    "of a type it does not know that carries a version, ignored: a deployment rolling.",
    ["type", "version"],
    registry=registry,
)
