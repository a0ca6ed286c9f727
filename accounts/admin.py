"""Admin of API tokens (docs/auth.md): a plain ModelAdmin whose deletes revoke.

Deleting a token here closes its sockets on every instance, as a logout does; no one but a
superuser sees, mints or deletes a superuser's tokens.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import AuthToken
from accounts.tokens import token_issue


def may_act_on(request: HttpRequest, user_id: str) -> bool:
    """Only a superuser may act on a superuser: staff rights must not reach above themselves."""
    if getattr(request.user, "is_superuser", False):
        return True
    return not get_user_model().objects.filter(pk=user_id, is_superuser=True).exists()


@admin.register(AuthToken)
class AuthTokenAdmin(admin.ModelAdmin):
    """Tokens by user; deleting one revokes it (its sockets close on every instance)."""

    list_display = ("digest_prefix", "user", "created", "expires_at")
    list_filter = ("expires_at",)
    search_fields = ("user__username",)
    raw_id_fields = ("user",)
    readonly_fields = ("digest", "created", "expires_at")
    fields = ("user", "digest", "created", "expires_at")

    @admin.display(description="token")
    def digest_prefix(self, obj: AuthToken) -> str:
        return f"{obj.digest[:12]}…"

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuthToken]:
        queryset = super().get_queryset(request)
        if getattr(request.user, "is_superuser", False):
            return queryset
        # A superuser's tokens are out of a non-superuser's sight and reach (bulk delete too).
        return queryset.exclude(user__is_superuser=True)

    def save_model(self, request: HttpRequest, obj: AuthToken, form: Any, change: bool) -> None:
        if not may_act_on(request, str(obj.user_id)):
            # Minting a superuser's token would be becoming that superuser.
            raise PermissionDenied
        if change:
            super().save_model(request, obj, form, change)
            return
        # Only the digest is kept: the key is shown this once.
        grant = token_issue(user=obj.user)
        obj.pk, obj.digest, obj.created, obj.expires_at = (
            grant.token.pk,
            grant.token.digest,
            grant.token.created,
            grant.token.expires_at,
        )
        messages.warning(request, f"The new token is {grant.key} (shown only now).")

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        # One by one, so each token's post_delete revokes its sockets.
        for token in queryset:
            token.delete()
