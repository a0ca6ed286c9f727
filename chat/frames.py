"""Client frames in, reply frames out: the WebSocket wire shapes (docs/protocol.md).

Parsing stops at the envelope (JSON object, ``type``, ``ref``); each frame's fields are then
validated by the same Input serializer and the same ``input_validate`` as its REST twin, so an
unknown field is refused here as in a REST body (``ENVELOPE_KEYS`` aside).

Frames are read and written with orjson, the wire's JSON unchanged (docs/protocol.md,
"Frames as JSON"): the standard module's reading of a frame cost a typing delivery more than
its validation. Where the two libraries would read or write the same frame differently, the
standard module's answer is kept: an integer literal past 64 bits (orjson reads it as a
float) and a frame orjson cannot write (an int past 64 bits, a key that is not a string).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

MAX_REF_LENGTH: Final = 64
# The envelope every client frame has besides its fields: never an unknown field.
ENVELOPE_KEYS: Final = frozenset({"type", "ref"})

# Error codes of the wire contract.
INVALID_JSON: Final = "invalid_json"
UNKNOWN_TYPE: Final = "unknown_type"
INVALID_PAYLOAD: Final = "invalid_payload"
NOT_PARTICIPANT: Final = "not_participant"
NOT_FOUND: Final = "not_found"
RATE_LIMITED: Final = "rate_limited"

# 19 digits in a row may be an integer past 64 bits, which orjson would read as a float: such
# a frame (rare; a digit run inside a string counts too, harmlessly) is read by ``json``.
_LONG_DIGITS: Final = re.compile(r"[0-9]{19}")

ERROR_MESSAGES: Final = {
    INVALID_JSON: "The frame is not valid JSON.",
    UNKNOWN_TYPE: "Unknown frame type.",
    INVALID_PAYLOAD: "The frame's fields are invalid.",
    NOT_PARTICIPANT: "You are not a participant of this conversation.",
    NOT_FOUND: "No such conversation.",
    RATE_LIMITED: "Too many frames; slow down.",
}


@dataclass(frozen=True)
class ClientFrame:
    type: str
    ref: str | None
    data: dict[str, Any]


class FrameError(Exception):
    """A frame that gets an ``error`` reply instead of being handled."""

    def __init__(
        self, code: str, *, ref: str | None = None, details: Any = None, message: str = ""
    ) -> None:
        super().__init__(code)
        self.code = code
        self.ref = ref
        self.details = details
        self.message = message or ERROR_MESSAGES.get(code, code)

    def to_frame(self) -> dict[str, Any]:
        return error_frame(self.code, ref=self.ref, details=self.details, message=self.message)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise ValueError(f"{literal} is too large for a double")
    return value


def json_read(text: str) -> Any:
    """One frame's JSON value; ``ValueError`` (or ``RecursionError``) for anything else.

    ``NaN`` and ``Infinity`` are not JSON and are refused (REST's parser refuses them too), as
    is a number too large for a double."""
    if _LONG_DIGITS.search(text) is None:
        return orjson.loads(text)
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)


def frame_serialize(frame: dict[str, Any]) -> str:
    """One server frame's text: compact JSON, UTF-8 characters as they are."""
    try:
        return orjson.dumps(frame).decode()
    except TypeError:
        return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def frame_parse(text: str) -> ClientFrame:
    """The envelope of one client frame, or ``FrameError``."""
    try:
        data = json_read(text)
    except (ValueError, RecursionError):
        raise FrameError(INVALID_JSON) from None
    if not isinstance(data, dict):
        raise FrameError(
            INVALID_PAYLOAD, details={"non_field_errors": ["A frame is a JSON object."]}
        )
    ref = data.get("ref")
    if "ref" in data and (not isinstance(ref, str) or len(ref) > MAX_REF_LENGTH):
        # A ref that cannot be echoed is not echoed.
        raise FrameError(
            INVALID_PAYLOAD,
            details={"ref": [f"A string of at most {MAX_REF_LENGTH} characters."]},
        )
    frame_type = data.get("type")
    if not isinstance(frame_type, str):
        raise FrameError(INVALID_PAYLOAD, ref=ref, details={"type": ["This field is required."]})
    return ClientFrame(type=frame_type, ref=ref, data=data)


def error_frame(
    code: str, *, ref: str | None = None, details: Any = None, message: str | None = None
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error"}
    if ref is not None:
        frame["ref"] = ref
    frame["code"] = code
    frame["message"] = message or ERROR_MESSAGES.get(code, code)
    if details is not None:
        frame["details"] = details
    return frame


def ack_frame(*, ref: str | None, result: dict[str, Any]) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "ack"}
    if ref is not None:
        frame["ref"] = ref
    frame.update(result)
    return frame


def pong_frame(*, ref: str | None) -> dict[str, Any]:
    return {"type": "pong", "ref": ref} if ref is not None else {"type": "pong"}
