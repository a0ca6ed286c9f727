"""Token routes under ``/api/``. Every path matches with or without a slash."""

from __future__ import annotations

from django.urls import re_path

from accounts import token_views

urlpatterns = [
    re_path(r"^auth/token/?$", token_views.ObtainTokenView.as_view(), name="auth-token"),
    re_path(r"^auth/logout/?$", token_views.LogoutView.as_view(), name="auth-logout"),
]
