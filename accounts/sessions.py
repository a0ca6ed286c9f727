"""Sockets opened with a Django session cookie end with the session (docs/auth.md).

A session ends by logout, ``flush()``, ``cycle_key()``, deletion in the admin or
``clearsessions``: each deletes its row, and the ``post_delete`` receiver below sends
``connection.revoke`` naming the session's digest after commit, so the sockets opened with
that cookie close with 4401 on every instance. What deletes nothing (expiry, a password set
by ``QuerySet.update``, which changes the session's auth hash) and what a Redis outage
swallowed is caught by the instance's authority sweep (``accounts.authority``), which
reads ``sessions_live`` and the users' password hashes.

Only the database-backed engines (``db``, ``cached_db``) keep a row to check; with another
engine a session socket is held to its user's activity and password only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.models import Session
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

from accounts.queries import matching
from connections.control import sockets_revoke_on_commit

_DATABASE_ENGINES = frozenset(
    {"django.contrib.sessions.backends.db", "django.contrib.sessions.backends.cached_db"}
)


@dataclass(frozen=True, slots=True)
class SessionIdentity:
    """What a socket remembers of the session it was opened with (slotted: one per socket,
    kept as long as the socket)."""

    session_key: str
    # The session's name in a ``connection.revoke``: the key itself is a credential (the
    # cookie's value) and is never sent between instances.
    digest: str
    # The user's password hash at connect: the session's auth hash derives from it, so a
    # change makes Django refuse the cookie, and the socket must follow.
    password: str


def session_digest(session_key: str) -> str:
    return hashlib.sha256(f"session:{session_key}".encode()).hexdigest()


def sessions_stored_in_database() -> bool:
    return settings.SESSION_ENGINE in _DATABASE_ENGINES


def sessions_live(*, session_keys: list[str]) -> set[str]:
    """Which of ``session_keys`` name a session that still exists and has not expired."""
    found: set[str] = set()
    live = Session.objects.filter(expire_date__gt=timezone.now())
    for queryset in matching(live, "session_key", session_keys):
        found.update(queryset.values_list("session_key", flat=True))
    return found


@receiver(post_delete, sender=Session, dispatch_uid="accounts.session_deleted")
def _session_deleted(sender: Any, instance: Session, **kwargs: Any) -> None:
    if instance.expire_date <= timezone.now():
        # ``clearsessions`` at work: the sweep closed its sockets at expiry already, and
        # thousands of messages for sessions nobody holds would buy nothing.
        return
    user_id = instance.get_decoded().get(SESSION_KEY)
    if user_id is not None:
        sockets_revoke_on_commit(user_id=user_id, token_hash=session_digest(instance.session_key))
