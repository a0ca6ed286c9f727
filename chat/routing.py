from __future__ import annotations

from django.urls import re_path

from chat.consumers import ChatConsumer

websocket_urlpatterns = [
    re_path(r"^ws/?$", ChatConsumer.as_asgi()),
]
