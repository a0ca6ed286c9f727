from __future__ import annotations

from django.urls import re_path

from chat import views

urlpatterns = [
    re_path(r"^auth/token/?$", views.ObtainTokenView.as_view(), name="auth-token"),
]
