"""Presence's input and output serializers, for ``POST /api/user/status`` and the ``status``
frame alike (both validate with ``realtime_project.inputs.input_validate``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from presence.services import PresenceState
from presence.store import STATUSES


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@extend_schema_serializer(component_name="StatusInput")
class StatusInputSerializer(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=STATUSES)


@extend_schema_serializer(component_name="StatusOutput")
class StatusOutputSerializer(serializers.Serializer[Any]):
    user_id = serializers.CharField()
    status = serializers.ChoiceField(choices=STATUSES)
    updated_at = serializers.DateTimeField()


def status_to_dict(state: PresenceState) -> dict[str, Any]:
    """A status change as REST's 200 body and the ``status`` frame's ``ack`` show it."""
    return {
        "user_id": str(state.user_id),
        "status": state.status,
        "updated_at": _iso(state.updated_at),
    }


def user_status_to_dict(user_id: str, state: PresenceState | None) -> dict[str, Any]:
    """One entry of ``GET /api/users/status`` (never seen: offline)."""
    if state is None:
        return {"user_id": user_id, "status": "offline", "last_seen": None}
    return {"user_id": user_id, "status": state.status, "last_seen": _iso(state.last_seen)}
