"""Signals presence sends; other apps listen (presence never imports them)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent with ``await presence_changed.asend(sender=None, user_id=str, status=str,
# last_seen=datetime | None, updated_at=datetime)`` after the stored state changed.
presence_changed = Signal()
