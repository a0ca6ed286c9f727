"""Tokens issued in-process for a test, optionally with a short life."""

from __future__ import annotations

from datetime import timedelta

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from accounts.clock import token_clock
from accounts.models import AuthToken
from accounts.tokens import token_issue


@sync_to_async
def token_issued(user_id: str, *, ttl_seconds: float | None = None) -> str:
    """A new token's key for the user; it expires ``ttl_seconds`` after the token clock's now
    when given (``tests/support/clock.py`` moves that clock)."""
    grant = token_issue(user=get_user_model().objects.get(pk=user_id))
    if ttl_seconds is not None:
        AuthToken.objects.filter(pk=grant.token.pk).update(
            expires_at=token_clock.now() + timedelta(seconds=ttl_seconds)
        )
    return grant.key
