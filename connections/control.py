"""Control messages to a user's sockets on every instance (docs/auth.md).

Every socket joins ``user.<id>``; besides that user's events, the group carries two control
messages that connections owns and that know nothing of conversations:

- ``{"type": "connection.close", "code": int}``: close every socket of the user;
- ``{"type": "connection.revoke", "token_hash": str | None}``: close (4401) every socket of
  the user authenticated with that token, or every socket of the user for ``None``.

They are sent after the change that caused them commits, so an instance that acts on one and
looks at the database sees the change.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

CLOSE_MESSAGE_TYPE = "connection.close"
REVOKE_MESSAGE_TYPE = "connection.revoke"


def user_group(user_id: object) -> str:
    """The group of every socket of one user (the same name chat's events use)."""
    return f"user.{user_id}"


async def control_send(*, user_id: object, message: dict[str, Any]) -> None:
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
    await control_send(user_id=user_id, message={"type": CLOSE_MESSAGE_TYPE, "code": code})


async def sockets_revoke(*, user_id: object, token_hash: str | None) -> None:
    """Close (4401) the user's sockets holding ``token_hash`` (all of them for ``None``)."""
    await control_send(
        user_id=user_id, message={"type": REVOKE_MESSAGE_TYPE, "token_hash": token_hash}
    )


def sockets_revoke_on_commit(*, user_id: object, token_hash: str | None) -> None:
    """``sockets_revoke`` once the current transaction commits (at once outside one)."""
    transaction.on_commit(
        lambda: async_to_sync(sockets_revoke)(user_id=user_id, token_hash=token_hash)
    )
