"""Root URLs. Every REST path answers with and without a trailing slash (never a redirect)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path

from realtime_project.views import demo_page

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("health.urls")),
    re_path(r"^api/", include("chat.urls")),
    re_path(r"^api-auth/", include("rest_framework.urls")),
    path("", demo_page, name="home"),
    path("demo/", demo_page, name="demo"),
]
