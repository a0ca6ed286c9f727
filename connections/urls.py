"""Connection routes under ``/api/``. Every path matches with or without a slash."""

from __future__ import annotations

from django.urls import re_path

from connections import views

urlpatterns = [
    re_path(
        r"^connections/stats/?$", views.ConnectionStatsView.as_view(), name="connections-stats"
    ),
]
