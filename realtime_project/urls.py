"""Root URLs. Every REST path answers with and without a trailing slash (never a redirect)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path

urlpatterns = [
    path("admin/", admin.site.urls),
    re_path(r"^api/", include("chat.urls")),
    re_path(r"^api-auth/", include("rest_framework.urls")),
]
