"""API tokens that expire and can be revoked (docs/auth.md).

A user may hold several tokens at once (one per device or login), so that a long-lived socket
can swap to a fresh token before its own expires without anything else being cut off. Only a
digest of each key is stored: a leaked database does not leak working credentials. The digest
is also what names a token in a ``connection.revoke`` control message.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models


def token_digest(key: str) -> str:
    """The stored (and broadcast) name of a token key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class AuthToken(models.Model):
    digest = models.CharField(max_length=64, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, related_name="auth_tokens", on_delete=models.CASCADE
    )
    created = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        # The table kept its name when the model moved here from ``connections``: the move
        # changed no schema, so an existing database needs no data migration.
        db_table = "connections_authtoken"
        verbose_name = "API token"
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.digest[:12]}… ({self.user})"
