from django.urls import re_path

from webhooks.views import WebhookStatsView

urlpatterns = [
    re_path(r"^webhooks/stats/?$", WebhookStatsView.as_view(), name="webhook-stats"),
]
