"""Health and metrics routes; each answers with and without a trailing slash."""

from __future__ import annotations

from django.urls import re_path

from health.views import health_view, metrics_view

urlpatterns = [
    re_path(r"^api/health/?$", health_view, name="health"),
    re_path(r"^metrics/?$", metrics_view, name="metrics"),
]
