"""Token lifecycle: issue, look up, revoke; the REST authentication class (docs/auth.md).

A token is valid while it exists, has not reached ``expires_at`` and its user is active.
Whatever ends that (logout, deletion in the admin, the user's deactivation or deletion, a
password change, which deletes every token of the user) sends ``connection.revoke`` after
commit, so live sockets close with 4401 on every instance; a token that expires closes its
sockets by the event loop's expiry schedule (``accounts.expiry``), and what no signal
announced is caught by the instance's authority sweep (``accounts.authority``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from accounts.clock import token_clock
from accounts.models import AuthToken, token_digest
from accounts.queries import matching
from connections.control import sockets_revoke_on_commit
from realtime_project.conf import realtime_settings
from realtime_project.database import (
    BatchedRead,
    database_async,
    database_async_enabled,
    database_connection,
)

KEYWORD = "Token"


@dataclass(frozen=True)
class TokenGrant:
    """A freshly issued token: the key is shown once, only its digest is kept."""

    key: str
    token: AuthToken


@dataclass(frozen=True, slots=True)
class TokenIdentity:
    """What a socket remembers of the token it authenticated with (slotted: one per socket,
    kept as long as the socket)."""

    digest: str
    expires_at: datetime
    # time.monotonic() when the token was known valid (a database read or a cache hit); a
    # revocation heard after it closes the socket once it has joined ``user.<id>``. 0: unset.
    checked_at: float = 0.0
    # The row's id: what the authority sweep asks about (an integer is far cheaper to send
    # and compare by the thousand than a 64-character digest). 0: unknown, never valid.
    token_id: int = 0


def token_ttl() -> timedelta:
    return timedelta(seconds=realtime_settings.TOKEN_TTL_SECONDS)


@transaction.atomic
def token_issue(*, user: Any) -> TokenGrant:
    """A new token for ``user``; the user's expired tokens are pruned on the way."""
    now = token_clock.now()
    AuthToken.objects.filter(user=user, expires_at__lte=now).delete()
    key = secrets.token_urlsafe(32)
    token = AuthToken.objects.create(
        digest=token_digest(key), user=user, expires_at=now + token_ttl()
    )
    return TokenGrant(key=key, token=token)


def tokens_issue_bulk(*, user_ids: list[int]) -> dict[int, str]:
    """A new token for each of ``user_ids`` in one INSERT (seeding load tests)."""
    expires_at = token_clock.now() + token_ttl()
    keys = {pk: secrets.token_urlsafe(32) for pk in user_ids}
    AuthToken.objects.bulk_create(
        [
            AuthToken(digest=token_digest(key), user_id=pk, expires_at=expires_at)
            for pk, key in keys.items()
        ]
    )
    return keys


def token_lookup(key: str) -> AuthToken | None:
    """The valid token for ``key`` with its user, or ``None`` (unknown, expired, inactive)."""
    if not key:
        return None
    token = (
        AuthToken.objects.select_related("user")
        .filter(digest=token_digest(key), expires_at__gt=token_clock.now())
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    return token


async def token_lookup_async(key: str) -> AuthToken | None:
    """``token_lookup`` for a connecting socket: on PostgreSQL read on the event loop's async
    connection (no thread), the same rows read into the same models; the tokens of connects
    arriving together are read by one query (``realtime_project.database.BatchedRead``)."""
    if not database_async_enabled():
        token: AuthToken | None = await database_async(token_lookup)(key)
        return token
    if not key:
        return None
    return await _TOKENS.get(token_digest(key))


async def _tokens_read(digests: list[str]) -> dict[str, AuthToken | None]:
    """The valid tokens among ``digests``, each with its active user, by digest."""
    user_model = get_user_model()
    user_fields = [field.attname for field in user_model._meta.concrete_fields]
    token_fields = [field.attname for field in AuthToken._meta.concrete_fields]
    users, tokens = user_model._meta.db_table, AuthToken._meta.db_table
    assert user_model._meta.pk is not None
    user_pk = user_model._meta.pk.column
    columns = ", ".join(
        [f"t.{name}" for name in token_fields] + [f"u.{name}" for name in user_fields]
    )
    query = (
        f"SELECT {columns} FROM {tokens} t JOIN {users} u ON u.{user_pk} = t.user_id "
        f"WHERE t.digest = ANY(%s) AND t.expires_at > %s AND u.is_active"
    )
    async with database_connection() as db:
        rows = await (await db.execute(query, [digests, token_clock.now()])).fetchall()
    found: dict[str, AuthToken | None] = {}
    for row in rows:
        token = AuthToken.from_db("default", token_fields, row[: len(token_fields)])
        token.user = user_model.from_db("default", user_fields, row[len(token_fields) :])
        found[token.digest] = token
    return found


_TOKENS: BatchedRead[str, AuthToken | None] = BatchedRead(_tokens_read, missing=None)


def token_revoke(*, token: AuthToken) -> None:
    """Delete ``token``; the post_delete receiver closes its sockets after commit."""
    token.delete()


def tokens_valid(*, token_ids: list[int]) -> set[int]:
    """Which of ``token_ids`` still name a valid token (unexpired, its user active)."""
    found: set[int] = set()
    valid = AuthToken.objects.filter(expires_at__gt=token_clock.now(), user__is_active=True)
    for queryset in matching(valid, "id", token_ids):
        found.update(queryset.values_list("id", flat=True))
    return found


def users_passwords(*, user_ids: list[str]) -> dict[str, str]:
    """The password hash of each of ``user_ids`` that is an active user."""
    ids = [int(u) for u in user_ids if u.isdigit()]
    found: dict[str, str] = {}
    active = get_user_model().objects.filter(is_active=True)
    for queryset in matching(active, "pk", ids):
        found.update((str(pk), password) for pk, password in queryset.values_list("pk", "password"))
    return found


class ExpiringTokenAuthentication(BaseAuthentication):
    """``Authorization: Token <key>``; an unknown, revoked or expired token is a 401."""

    def authenticate(self, request: Request) -> tuple[Any, AuthToken] | None:
        auth = get_authorization_header(request).split()
        if not auth or auth[0].lower() != KEYWORD.lower().encode():
            return None
        if len(auth) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header.")
        try:
            key = auth[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid token header.") from None
        token = token_lookup(key)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired token.")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD


# -- revocation reaches live sockets ----------------------------------------------------------


@receiver(post_delete, sender=AuthToken, dispatch_uid="accounts.token_deleted")
def _token_deleted(sender: Any, instance: AuthToken, **kwargs: Any) -> None:
    # Logout, the admin's delete (one or many), the user's deletion (cascade): all come here.
    sockets_revoke_on_commit(user_id=instance.user_id, token_hash=instance.digest)


# Set on a user instance by ``user_saving_receiver`` when its save changes the password.
_PASSWORD_CHANGED = "_realtime_password_changed"


def user_saving_receiver(
    sender: Any, instance: Any, raw: bool, update_fields: Any, **kwargs: Any
) -> None:
    """Compare the password being saved with the stored one (the admin, ``set_password`` then
    ``save``, a reset flow: every path that saves the model)."""
    setattr(instance, _PASSWORD_CHANGED, False)
    if raw or instance._state.adding or instance.pk is None:
        return
    if update_fields is not None and "password" not in update_fields:
        return  # ``last_login`` on every login, and other partial saves: no query
    stored = sender._default_manager.filter(pk=instance.pk).values_list("password", flat=True)
    previous = stored.first()
    setattr(instance, _PASSWORD_CHANGED, previous is not None and previous != instance.password)


def user_saved_receiver(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if created:
        return
    password_changed = bool(getattr(instance, _PASSWORD_CHANGED, False))
    setattr(instance, _PASSWORD_CHANGED, False)
    if password_changed:
        # Whoever changed it may be locking a thief out: no token issued before survives.
        # Each deletion revokes its own token; the message below covers the rest.
        AuthToken.objects.filter(user_id=instance.pk).delete()
    if password_changed or not instance.is_active:
        # Every socket of the user, session-authenticated ones too (a new password changes
        # the session auth hash, so Django refuses their cookies from now on).
        sockets_revoke_on_commit(user_id=instance.pk, token_hash=None)
