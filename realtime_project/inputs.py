"""The one validation of client input, for REST bodies and WebSocket frames alike.

A REST view and its WebSocket twin hand the same data to ``input_validate`` with the same
serializer, so both accept and refuse exactly the same input with the same field errors
(tests/chat/test_input_parity.py feeds both). Apps' serializers live with the app that owns
the input (``chat.serializers``, ``presence.serializers``); this module only knows DRF.

A serializer instance is built once per class and its ``run_validation`` reused: building
one deep-copies every declared field (``Serializer.get_fields``), which was the largest
single cost of a typing frame and of a reconnect storm's survivor (docs/benchmarks.md).
``run_validation`` keeps no state on the instance (``is_valid`` is what stores
``validated_data`` and ``errors``), and the bound fields only read their own configuration,
so one instance serves every thread. The serializers handed here take no ``context`` and no
``instance``: inputs, not model forms.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import Any

from rest_framework import serializers

# Keys a browser form adds on its own; never a client's typo.
FORM_KEYS = frozenset({"csrfmiddlewaretoken"})


@functools.cache
def _validator(
    serializer_class: type[serializers.Serializer[Any]],
) -> tuple[serializers.Serializer[Any], frozenset[str]]:
    """The class's one bound instance and the names of its fields."""
    serializer = serializer_class()
    return serializer, frozenset(serializer.fields)


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
    serializer, fields = _validator(serializer_class)
    # What ``is_valid(raise_exception=True)`` raises, without the per-call instance.
    validated = serializer.run_validation(data)
    if hasattr(data, "keys"):
        unknown = sorted(
            str(key)
            for key in data
            if key not in fields and key not in FORM_KEYS and key not in envelope
        )
        if unknown:
            raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
    return dict(validated)
