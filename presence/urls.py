"""Presence's REST routes under ``/api/``. Every path matches with or without a trailing slash."""

from __future__ import annotations

from django.urls import re_path

from presence import views

urlpatterns = [
    re_path(r"^user/status/?$", views.UserStatusView.as_view(), name="user-status"),
    re_path(r"^users/status/?$", views.UsersStatusView.as_view(), name="users-status"),
    re_path(r"^connections/info/?$", views.ConnectionInfoView.as_view(), name="connections-info"),
]
