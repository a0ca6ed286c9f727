"""OpenAPI pieces shared by every REST view (docs/rest-api.md#errors).

Error bodies are either ``{"detail": "..."}`` or DRF's field-error object
(``{"field": ["message", ...]}``); each view names the errors it can answer with these.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class DetailErrorSerializer(serializers.Serializer[Any]):
    detail = serializers.CharField()


FIELD_ERRORS = OpenApiResponse(
    response=OpenApiTypes.OBJECT,
    description='Invalid input: DRF\'s field-error object, e.g. {"body": ["This field is '
    'required."]}, or {"detail": "..."} for a body that is not JSON.',
)
UNAUTHENTICATED = OpenApiResponse(
    response=DetailErrorSerializer, description="No or invalid credentials."
)
FORBIDDEN = OpenApiResponse(
    response=DetailErrorSerializer, description="Not a participant of the conversation."
)
NOT_FOUND = OpenApiResponse(
    response=DetailErrorSerializer, description="No such conversation (or a malformed id)."
)
BAD_CURSOR = OpenApiResponse(response=DetailErrorSerializer, description="Invalid cursor.")


def strip_trailing_slashes(endpoints: list[Any], **kwargs: Any) -> list[Any]:
    """Preprocessing hook: name paths as the contract does, without the optional slash.

    Routes match ``/?$``; drf-spectacular would print that as a trailing ``/``.
    """
    result = []
    for path, path_regex, method, callback in endpoints:
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        result.append((path, path_regex, method, callback))
    return result
