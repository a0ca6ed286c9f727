"""Chat's side of presence: turn a stored presence change into ``presence`` events.

Presence knows nothing of conversations; it sends ``presence_changed`` and chat decides who
hears it: the user's own sockets and the conversations of ``selectors.presence_conversation_ids``,
the same rule by which ``selectors.presence_audience`` says who may read the status over REST.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chat import events, selectors
from chat.event_types import PresenceEvent
from connections.control import user_group


async def presence_changed_receiver(
    sender: Any,
    *,
    user_id: str,
    status: str,
    last_seen: datetime | None = None,
    **kwargs: Any,
) -> None:
    # This runs inside whatever called presence (a consumer, or a REST view's thread possibly
    # mid-transaction, whose connection must not be closed under it).
    conversation_ids = await selectors.presence_conversation_ids_async(user_id=user_id)
    await events.event_emit(
        event=PresenceEvent(
            user_id=str(user_id),
            status=status,  # type: ignore[arg-type]  # presence validated it
            last_seen=last_seen.isoformat() if last_seen else None,
        ),
        groups=[user_group(user_id)] + [events.conversation_group(cid) for cid in conversation_ids],
    )
