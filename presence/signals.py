"""The signal presence sends after a stored transition. See docs/presence.md.

Presence never imports chat: chat connects an async receiver that builds the ``presence``
frame and delivers it to the user's audience.
"""

from __future__ import annotations

from django.dispatch import Signal

# Sent as: await presence_changed.asend(sender=None, user_id=str, status=str,
#                                       last_seen=datetime | None, updated_at=datetime)
presence_changed = Signal()
