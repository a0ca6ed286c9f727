"""Root URLs. Every REST path answers with and without a trailing slash (never a redirect)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from realtime_project.views import demo_page

urlpatterns = [
    # Before the admin's own catch-all: the live-connections page is an extension of it.
    path("admin/connections/", include("connections.admin_urls")),
    path("admin/", admin.site.urls),
    path("", include("health.urls")),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^api/docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    re_path(r"^api/", include("presence.urls")),
    re_path(r"^api/", include("accounts.urls")),
    re_path(r"^api/", include("connections.urls")),
    re_path(r"^api/", include("chat.urls")),
    re_path(r"^api/", include("webhooks.urls")),
    re_path(r"^api-auth/", include("rest_framework.urls")),
    path("", demo_page, name="home"),
    path("demo/", demo_page, name="demo"),
]
