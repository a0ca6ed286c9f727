"""REST alternatives for presence (docs/rest-api.md#presence).

Presence never imports chat: who may see whose status comes from the same audience hook that
decides who hears ``presence`` events (``REALTIME["PRESENCE_AUDIENCE"]``: a user and everyone
sharing a conversation with them). A user outside the caller's audience is silently left out,
so the answer never tells an existing stranger from a user id that names nobody.

``/api/connections/info`` lives here too: it joins the caller's presence with their sockets,
and presence may read the connection registry while connections never reads presence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import async_to_sync
from django.utils.module_loading import import_string
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from connections.registry import get_registry
from presence.serializers import (
    StatusInputSerializer,
    StatusOutputSerializer,
    status_to_dict,
    user_status_to_dict,
)
from presence.services import PresenceState, presence_get_many, presence_set
from presence.store import STATUSES
from realtime_project.conf import realtime_settings
from realtime_project.inputs import input_validate

MAX_STATUS_IDS = 100
_ID = re.compile(r"^[0-9]{1,20}$")

_UNAUTHENTICATED = OpenApiResponse(description="No or invalid credentials.")
_FIELD_ERRORS = OpenApiResponse(
    response=OpenApiTypes.OBJECT, description="Invalid input: DRF's field-error object."
)


def _audience(user_id: str) -> set[str]:
    hook: Callable[[str], Iterable[str]] = import_string(realtime_settings.PRESENCE_AUDIENCE)
    return {str(uid) for uid in hook(user_id)} | {user_id}


def _states(user_ids: list[str]) -> dict[str, PresenceState]:
    return dict(async_to_sync(presence_get_many)(user_ids=user_ids))


def parse_ids(raw: str | None) -> list[str]:
    """``"1,2,3"`` -> ``["1", "2", "3"]`` (deduplicated, order kept); anything else is a 400."""
    if raw is None or not raw.strip():
        raise ValidationError({"ids": ["This parameter is required: comma-separated user ids."]})
    ids = [part.strip() for part in raw.split(",")]
    bad = [part for part in ids if not _ID.match(part)]
    if bad:
        raise ValidationError({"ids": [f"Not user ids: {', '.join(repr(b) for b in bad[:5])}."]})
    unique = list(dict.fromkeys(ids))
    if len(unique) > MAX_STATUS_IDS:
        raise ValidationError({"ids": [f"At most {MAX_STATUS_IDS} ids at a time."]})
    return unique


class UserStatusView(APIView):
    """Set the caller's own status; the change is broadcast as a ``presence`` event."""

    @extend_schema(
        operation_id="user_status_set",
        summary="Set the caller's status",
        request=StatusInputSerializer,
        responses={200: StatusOutputSerializer, 400: _FIELD_ERRORS, 401: _UNAUTHENTICATED},
    )
    def post(self, request: Request) -> Response:
        data = input_validate(StatusInputSerializer, request.data)
        try:
            state = async_to_sync(presence_set)(user_id=str(request.user.pk), status=data["status"])
        except ValueError as exc:
            raise ValidationError({"status": [str(exc)]}) from None
        return Response(status_to_dict(state))


class UsersStatusView(APIView):
    """Statuses of the caller and of users who share a conversation with them."""

    @extend_schema_serializer(component_name="UsersStatusOutput")
    class OutputSerializer(serializers.Serializer[Any]):
        @extend_schema_serializer(component_name="UserStatus")
        class UserSerializer(serializers.Serializer[Any]):
            user_id = serializers.CharField()
            status = serializers.ChoiceField(choices=STATUSES)
            last_seen = serializers.DateTimeField(allow_null=True)

        users = UserSerializer(many=True)

    @extend_schema(
        operation_id="users_status_list",
        summary="Statuses of several users",
        parameters=[
            OpenApiParameter(
                "ids",
                OpenApiTypes.STR,
                OpenApiParameter.QUERY,
                required=True,
                description=f"Comma-separated user ids, at most {MAX_STATUS_IDS}. Users who "
                "are neither the caller nor share a conversation with them are left out.",
                pattern=r"^[0-9]+(,[0-9]+)*$",
            )
        ],
        responses={
            200: OutputSerializer,
            400: _FIELD_ERRORS,
            401: _UNAUTHENTICATED,
        },
    )
    def get(self, request: Request) -> Response:
        wanted = parse_ids(request.query_params.get("ids"))
        visible = _audience(str(request.user.pk))
        allowed = [uid for uid in wanted if uid in visible]
        states = _states(allowed) if allowed else {}
        users = [user_status_to_dict(uid, states.get(uid)) for uid in allowed]
        return Response({"users": users})


class ConnectionInfoView(APIView):
    """The caller's status and live sockets on every instance."""

    @extend_schema_serializer(component_name="ConnectionInfoOutput")
    class OutputSerializer(serializers.Serializer[Any]):
        @extend_schema_serializer(component_name="Connection")
        class ConnectionSerializer(serializers.Serializer[Any]):
            connection_id = serializers.CharField()
            instance_id = serializers.CharField()
            connected_at = serializers.DateTimeField()
            last_seen = serializers.DateTimeField()
            expires_at = serializers.DateTimeField()
            metadata = serializers.DictField(child=serializers.CharField())

        user_id = serializers.CharField()
        status = serializers.ChoiceField(choices=STATUSES)
        connection_count = serializers.IntegerField()
        connections = ConnectionSerializer(many=True)

    @extend_schema(
        operation_id="connections_info",
        summary="The caller's live connections",
        responses={200: OutputSerializer, 401: _UNAUTHENTICATED},
    )
    def get(self, request: Request) -> Response:
        user_id = str(request.user.pk)
        connections = async_to_sync(get_registry().user_connections)(user_id)
        state = _states([user_id]).get(user_id)
        return Response(
            {
                "user_id": user_id,
                "status": state.status if state is not None else "offline",
                "connection_count": len(connections),
                "connections": [c.to_dict() for c in connections],
            }
        )
