"""Control messages to a user's sockets on every instance (docs/auth.md).

Every socket joins ``user.<id>``; besides that user's events, the group carries two control
messages that connections owns and that know nothing of conversations (declared, with their
versions, in ``connections.layer_messages``):

- ``connection.close`` (``code``): close every socket of the user;
- ``connection.revoke`` (``token_hash``, ``user_id``): close (4401) every socket of the user
  authenticated with that token (or opened with the Django session of that digest,
  ``accounts.sessions.session_digest``), or every socket of the user for ``None``; each
  instance's token cache (``accounts.token_cache``) drops it too.

They are sent after the change that caused them commits, so an instance that acts on one and
looks at the database sees the change. While this instance's Redis link is down it hears
none sent elsewhere (``control_audible``): what relies on them then asks the database.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from connections.layer_messages import connection_close_message, connection_revoke_message
from realtime_layer import RealtimeChannelLayer
from realtime_layer.core import STATUS_DEGRADED

logger = logging.getLogger(__name__)


def user_group(user_id: object) -> str:
    """The group of every socket of one user (the same name chat's events use)."""
    return f"user.{user_id}"


def control_audible(layer: object) -> bool:
    """Whether control messages sent on other instances reach this one now.

    False while the layer's Redis link is degraded: a revocation or a membership change made
    elsewhere is published into the void, so a socket's cached knowledge cannot be trusted.
    Without Redis there is no other instance, and a layer of another kind is taken at its word.
    """
    return not (isinstance(layer, RealtimeChannelLayer) and layer.status == STATUS_DEGRADED)


async def control_send(*, user_id: object, message: Mapping[str, object]) -> None:
    """Send one layer message (built by its function in a ``layer_messages`` module) to
    every socket of ``user_id``."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(user_group(user_id), message)
    except Exception:
        # The periodic re-check on every socket still catches a lost revocation.
        logger.exception("control message %s to user=%s failed", message.get("type"), user_id)


async def sockets_close(*, user_id: object, code: int) -> None:
    """Close every socket of ``user_id`` on every instance with ``code``."""
    await control_send(user_id=user_id, message=connection_close_message(code=code))


async def sockets_revoke(*, user_id: object, token_hash: str | None) -> None:
    """Close (4401) the user's sockets holding ``token_hash`` (all of them for ``None``)."""
    await control_send(
        user_id=user_id,
        message=connection_revoke_message(user_id=user_id, token_hash=token_hash),
    )


def sockets_revoke_on_commit(*, user_id: object, token_hash: str | None) -> None:
    """``sockets_revoke`` once the current transaction commits (at once outside one)."""
    transaction.on_commit(
        lambda: async_to_sync(sockets_revoke)(user_id=user_id, token_hash=token_hash)
    )
