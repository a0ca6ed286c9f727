"""The one validation of client input, for REST bodies and WebSocket frames alike.

A REST view and its WebSocket twin hand the same data to ``input_validate`` with the same
serializer, so both accept and refuse exactly the same input with the same field errors
(tests/chat/test_input_parity.py feeds both). Apps' serializers live with the app that owns
the input (``chat.serializers``, ``presence.serializers``); this module only knows DRF.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from rest_framework import serializers

# Keys a browser form adds on its own; never a client's typo.
FORM_KEYS = frozenset({"csrfmiddlewaretoken"})


def input_validate(
    serializer_class: type[serializers.Serializer[Any]],
    data: Any,
    *,
    envelope: Collection[str] = (),
) -> dict[str, Any]:
    """The validated data; unknown keys are refused too, as a misspelt field would be.

    ``envelope`` names keys that carry the input rather than belong to it (a frame's ``type``
    and ``ref``). Raises DRF's ``ValidationError`` (field-error object) and touches nothing.
    """
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    if hasattr(data, "keys"):
        unknown = sorted(
            str(key)
            for key in data
            if key not in serializer.fields and key not in FORM_KEYS and key not in envelope
        )
        if unknown:
            raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
    return dict(serializer.validated_data)
