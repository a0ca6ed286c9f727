"""The stream cursor alone (chat/stream_cursor.py): round trip, size, and refusal of
anything this server did not issue to this user."""

from __future__ import annotations

import base64
import uuid

import pytest

from chat.stream_cursor import (
    CursorInvalid,
    cursor_decode,
    cursor_encode,
    cursor_positions,
)


def _ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def test_positions_round_trip_whatever_the_seq() -> None:
    ids = _ids(4)
    positions = dict(zip(ids, [0, 127, 128, 2**40], strict=True))
    cursor = cursor_encode(positions, user_id="42")
    assert cursor_positions(cursor_decode(cursor, user_id="42"), ids) == positions


def test_it_is_url_safe_and_small() -> None:
    cursor = cursor_encode(dict.fromkeys(_ids(100), 5000), user_id="42")
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert len(cursor) <= 100 * 15 + 24


def test_only_followed_conversations_are_read_from_it() -> None:
    mine, other = _ids(2)
    decoded = cursor_decode(cursor_encode({mine: 3, other: 9}, user_id="42"), user_id="42")
    assert cursor_positions(decoded, [mine]) == {mine: 3}


def test_another_users_cursor_is_refused() -> None:
    cursor = cursor_encode({str(uuid.uuid4()): 1}, user_id="42")
    with pytest.raises(CursorInvalid):
        cursor_decode(cursor, user_id="43")


def _flip_one_bit(cursor: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[3] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "mangle",
    [
        _flip_one_bit,
        lambda c: c[:-3],
        lambda c: c + "A",
        lambda c: "",
        lambda c: "!!" + c,
        lambda c: "A" * 70_000,
    ],
)
def test_a_garbled_cursor_is_refused(mangle) -> None:
    cursor = cursor_encode({str(uuid.uuid4()): 300}, user_id="42")
    with pytest.raises(CursorInvalid):
        cursor_decode(mangle(cursor), user_id="42")
