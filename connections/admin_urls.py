"""The live-connections admin pages, mounted under ``/admin/connections/`` (staff only)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from connections.admin import disconnect_user_view, live_connections_view, revoke_user_view

urlpatterns = [
    path(
        "live/",
        admin.site.admin_view(live_connections_view),
        name="admin-live-connections",
    ),
    path(
        "live/disconnect/",
        admin.site.admin_view(disconnect_user_view),
        name="admin-live-connections-disconnect",
    ),
    path(
        "live/revoke/",
        admin.site.admin_view(revoke_user_view),
        name="admin-live-connections-revoke",
    ),
]
