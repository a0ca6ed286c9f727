"""Staff view of live connections across instances (docs/rest-api.md#connections).

Everything comes from Redis in a couple of pipelined round trips: the registry's per-instance
connection hashes and heartbeat lease, and the delivery counters each instance publishes at
its heartbeat. No instance is asked anything directly, so a dead or slow instance cannot hold
the answer up; it shows as ``dead`` with its last heartbeat.
"""

from __future__ import annotations

import math
from typing import Any

from asgiref.sync import async_to_sync
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from connections.registry import get_registry

INSTANCE_STATUSES = ("alive", "dead")

# Published beside the counters but not counts: summing timestamps or gauges means nothing
# (the connection total comes from the registry itself).
_NOT_SUMMED = frozenset({"updated_at", "connections"})


def counters_summary(per_instance: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Sum each counter over the instances, and keep each instance's own figures."""
    totals: dict[str, float] = {}
    clean: dict[str, dict[str, float | None]] = {}
    for instance_id in sorted(per_instance):
        clean[instance_id] = {}
        for name, value in sorted(per_instance[instance_id].items()):
            # A garbled value in Redis must not turn the whole answer into invalid JSON.
            usable = value if math.isfinite(value) else None
            clean[instance_id][name] = usable
            if usable is not None and name not in _NOT_SUMMED:
                totals[name] = totals.get(name, 0) + usable
    return {"totals": totals, "per_instance": clean}


async def connections_stats() -> dict[str, Any]:
    registry = get_registry()
    stats = await registry.stats()
    counters = await registry.all_instance_counters()
    return {
        "total_connections": stats["total_connections"],
        "unique_users": stats["unique_users"],
        "instances": stats["instances"],
        "messages": counters_summary(counters),
    }


class ConnectionStatsView(APIView):
    """Global and per-instance connection counts and delivery counters (staff only)."""

    # is_staff; an anonymous caller still gets 401, since authentication runs first.
    permission_classes = [IsAdminUser]

    @extend_schema_serializer(component_name="ConnectionStatsOutput")
    class OutputSerializer(serializers.Serializer[Any]):
        @extend_schema_serializer(component_name="InstanceStats")
        class InstanceSerializer(serializers.Serializer[Any]):
            instance_id = serializers.CharField()
            connections = serializers.IntegerField()
            last_heartbeat = serializers.DateTimeField()
            status = serializers.ChoiceField(choices=INSTANCE_STATUSES)

        @extend_schema_serializer(component_name="DeliveryCounters")
        class MessagesSerializer(serializers.Serializer[Any]):
            totals = serializers.DictField(
                child=serializers.FloatField(),
                help_text="Each delivery counter summed over the instances.",
            )
            per_instance = serializers.DictField(
                child=serializers.DictField(child=serializers.FloatField(allow_null=True)),
                help_text="Each instance's counters as it last published them.",
            )

        total_connections = serializers.IntegerField()
        unique_users = serializers.IntegerField()
        instances = InstanceSerializer(many=True)
        messages = MessagesSerializer()

    @extend_schema(
        operation_id="connections_stats",
        summary="Connection statistics across instances (staff only)",
        responses={
            200: OutputSerializer,
            401: OpenApiResponse(response=OpenApiTypes.OBJECT, description="No credentials."),
            403: OpenApiResponse(response=OpenApiTypes.OBJECT, description="Staff only."),
        },
    )
    def get(self, request: Request) -> Response:
        return Response(async_to_sync(connections_stats)())
