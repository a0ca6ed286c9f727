"""The permission-carrying model of the live-connections admin page (docs/auth.md)."""

from __future__ import annotations

from django.db import models


class LiveConnection(models.Model):
    """No table: live connections are in the registry. The model carries the permissions of
    the admin's live-connections page, so that a deployment grants them per group like any
    other (docs/auth.md): seeing who is connected from where (address, user agent) and
    cutting a user off are rights of their own, not something every staff account has.
    """

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_live_connections", "Can see live connections (addresses, user agents)"),
            ("disconnect_live_connections", "Can disconnect users and revoke their tokens"),
        ]

    def __str__(self) -> str:
        return "live connection"
