"""The ``id:`` of an event stream: every position of the user's conversations (docs/sse.md).

``EventSource`` sends back only the last ``id:`` it saw (``Last-Event-ID``), so that one
string must say where the client stands in *every* conversation, not just the one of the
event that carried it. It is kept small and URL-safe: per conversation the first 8 bytes of
its UUID and its ``seq`` as a varint (about 10 bytes), then an 8-byte MAC (keyed BLAKE2b
under a key derived from ``SECRET_KEY``) bound to the user, all base64url without padding.

The MAC makes a garbled or altered cursor, or another user's, fail as a whole (the stream
answers 400) instead of being half believed. Authority never rests on it: a prefix is only
ever matched against the conversations the stream already follows, so no cursor can open a
conversation its user is not in.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import uuid
from collections.abc import Iterable, Mapping

from django.conf import settings

VERSION = 1
PREFIX_BYTES = 8
MAC_BYTES = 8
# Far above any real cursor (about 14 characters per conversation): refused unread.
MAX_CURSOR_CHARS = 64 * 1024
_SALT = "chat.stream_cursor"
_VERSION_BYTE = bytes((VERSION,))


class CursorInvalid(ValueError):
    """Not a cursor this server issued to this user."""


@functools.lru_cache(maxsize=4)
def _mac_key(secret: str) -> bytes:
    # Derived once per secret, not per call as Django's salted_hmac does: a stream signs
    # every durable event it sends.
    return hashlib.sha256((_SALT + secret).encode()).digest()


def _mac(payload: bytes, user_id: str) -> bytes:
    # Keyed BLAKE2b is a MAC by design (no HMAC construction needed), and one hash, not two.
    mac = hashlib.blake2b(
        payload, key=_mac_key(settings.SECRET_KEY), digest_size=MAC_BYTES, person=b"sse-cursor"
    )
    mac.update(user_id.encode())
    return mac.digest()


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@functools.lru_cache(maxsize=65536)
def _prefix(conversation_id: str) -> bytes:
    return uuid.UUID(conversation_id).bytes[:PREFIX_BYTES]


def cursor_encode(positions: Mapping[str, int], *, user_id: str) -> str:
    """The cursor of ``positions`` (conversation id -> last ``seq`` the client has)."""
    # Entries in any order: decoding makes a map of them.
    payload = b"".join(
        [_VERSION_BYTE] + [_prefix(cid) + _varint(max(0, seq)) for cid, seq in positions.items()]
    )
    raw = payload + _mac(payload, user_id)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def cursor_decode(cursor: str, *, user_id: str) -> dict[bytes, int]:
    """The positions in ``cursor``, keyed by conversation-id prefix; ``CursorInvalid`` if it is
    not one this server issued to ``user_id``."""
    if not cursor or len(cursor) > MAX_CURSOR_CHARS:
        raise CursorInvalid("empty or oversized cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise CursorInvalid("not base64url") from None
    if len(raw) < 1 + MAC_BYTES:
        raise CursorInvalid("too short")
    payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(payload, user_id)):
        raise CursorInvalid("bad signature")
    if payload[0] != VERSION:
        raise CursorInvalid("unknown version")
    positions: dict[bytes, int] = {}
    at = 1
    while at < len(payload):
        prefix = payload[at : at + PREFIX_BYTES]
        at += PREFIX_BYTES
        seq, shift = 0, 0
        while True:
            if at >= len(payload) or shift > 63:
                raise CursorInvalid("truncated")
            byte = payload[at]
            at += 1
            seq |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if len(prefix) != PREFIX_BYTES:
            raise CursorInvalid("truncated")
        positions[bytes(prefix)] = seq
    return positions


def cursor_positions(
    decoded: Mapping[bytes, int], conversation_ids: Iterable[str]
) -> dict[str, int]:
    """The decoded positions of the conversations in ``conversation_ids`` (the ones the stream
    follows); any other prefix in the cursor is ignored."""
    found: dict[str, int] = {}
    for conversation_id in conversation_ids:
        seq = decoded.get(_prefix(conversation_id))
        if seq is not None:
            found[conversation_id] = seq
    return found
