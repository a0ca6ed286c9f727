"""Chat's REST routes under ``/api/``. Every path matches with or without a trailing slash."""

from __future__ import annotations

from django.urls import re_path
from rest_framework.routers import DefaultRouter

from chat import views

router = DefaultRouter()
# DRF only knows "/" or ""; a regex route takes the optional slash without a redirect.
router.trailing_slash = "/?"
# ``.json`` suffixes would double every route for no client's benefit.
router.include_format_suffixes = False
router.register("conversations", views.ConversationViewSet, basename="conversation")

urlpatterns = [
    re_path(r"^messages/read/?$", views.MessagesReadView.as_view(), name="messages-read"),
    *router.urls,
]
