"""Frames to and from their JSON text, with orjson (the server's wire, docs/protocol.md).

A client of a busy socket spends more of its time reading frames than on anything else it
does with them. The text is the standard module's, but for spelling: compact, characters
outside ASCII as UTF-8, a float as its shortest form. A frame orjson cannot write (an
integer past 64 bits, a key that is not a string) is written by the standard module. The
server writes no integer past 64 bits (a ``seq`` is a 64-bit column), so orjson reads every
frame it sends as the standard module would.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def frame_text(frame: dict[str, Any]) -> str:
    """The text of one client frame."""
    try:
        return orjson.dumps(frame).decode()
    except TypeError:
        return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def frame_read(raw: str | bytes) -> Any:
    """One server frame's JSON value; ``ValueError`` if it is not JSON."""
    return orjson.loads(raw)
