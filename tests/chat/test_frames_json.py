"""Frames read and written with orjson say on the wire what the standard module said."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chat.frames import INVALID_JSON, FrameError, frame_parse, frame_serialize

FRAMES: list[dict[str, Any]] = [
    {"type": "typing", "event_id": "e1", "conversation_id": "c", "user_id": "7", "is_typing": True},
    {"type": "message", "message": {"body": 'héllo\u2028wörld 😀 "quoted" \\ \n\t', "seq": 3}},
    {"type": "ack", "ref": "r", "conversations": {}, "read_at": None, "seq": 2**63 - 1},
    {"type": "connected", "heartbeat_interval": 20.5, "tiny": 1e-7, "big": 1e16, "neg": -0.0},
    {"type": "ack", "message_ids": ["a", "b"], "nested": [[], [{}], {"k": [1, 2.5, False]}]},
]


@pytest.mark.parametrize("frame", FRAMES)
def test_a_written_frame_reads_back_as_the_same_value(frame: dict[str, Any]) -> None:
    text = frame_serialize(frame)
    assert json.loads(text) == frame
    assert list(json.loads(text)) == list(frame)  # the keys in the order they were built


@pytest.mark.parametrize("frame", [f for f in FRAMES if "heartbeat_interval" not in f])
def test_a_frame_without_floats_is_written_as_the_standard_module_writes_it(
    frame: dict[str, Any],
) -> None:
    # Floats aside (``1e-07`` is ``1e-7`` now: the same number), byte for byte.
    assert frame_serialize(frame) == json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def test_non_ascii_is_sent_as_utf8_not_escaped() -> None:
    assert frame_serialize({"body": "é😀"}) == '{"body":"é😀"}'


@pytest.mark.parametrize(
    "frame",
    [{"seq": 2**64}, {"positions": {1: 2}}],
    ids=["int past 64 bits", "non-string key"],
)
def test_what_orjson_cannot_write_is_written_as_before(frame: dict[str, Any]) -> None:
    assert json.loads(frame_serialize(frame)) == json.loads(json.dumps(frame))


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "resume", "positions": {"c": 100000000000000000000000000000}}',
        '{"type": "x", "n": -18446744073709551617}',
        '{"type": "x", "n": 18446744073709551615, "s": "1234567890123456789012"}',
    ],
)
def test_integers_of_any_size_are_read_exactly(text: str) -> None:
    assert frame_parse(text).data == json.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "x", "n": NaN}',
        '{"type": "x", "n": -Infinity}',
        '{"type": "x", "n": 1e400}',
        '{"type": "x", "n": 1e400, "digits": 12345678901234567890}',
        '{"type": "x", "n": Infinity, "digits": 12345678901234567890}',
        '{"type": "x"} trailing',
        "",
    ],
)
def test_what_is_not_json_is_invalid_json(text: str) -> None:
    with pytest.raises(FrameError) as caught:
        frame_parse(text)
    assert caught.value.code == INVALID_JSON


def test_deep_nesting_is_invalid_json_not_a_crash() -> None:
    with pytest.raises(FrameError) as caught:
        frame_parse('{"type": "x", "n": ' + "[" * 5000 + "]" * 5000 + "}")
    assert caught.value.code == INVALID_JSON
