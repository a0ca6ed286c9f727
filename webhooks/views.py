"""``GET /api/webhooks/stats`` (staff only). See docs/webhooks.md."""

from __future__ import annotations

from datetime import UTC, datetime

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webhooks.delivery import outbox_stats


class WebhookStatsView(APIView):
    # Anonymous callers get 401 (authentication runs first), signed-in non-staff 403.
    permission_classes = [IsAdminUser]
    throttle_classes: list[type] = []

    @extend_schema(
        summary="Webhook outbox statistics (staff only)",
        responses=inline_serializer(
            name="WebhookStats",
            fields={
                "pending": serializers.IntegerField(),
                "oldest_pending_age_seconds": serializers.FloatField(),
                "delivered": serializers.IntegerField(),
                "failed_attempts": serializers.IntegerField(),
                "expired": serializers.IntegerField(),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        return Response(outbox_stats(now=datetime.now(UTC)))
