"""What instances of the layer send each other through Redis: declared types with a version.

Design note: docs/channel-layer.md ("Envelope"). Each message is one msgpack array. Its first
positions keep the layout of the unversioned messages of earlier releases, so an instance of
either release reads what the other sends while a deployment rolls; the version follows them
at a fixed position, the same in every version:

- ``Envelope``: ``[origin, dedup_key, target, ephemeral, payload, tag, version]``
  (earlier releases: the first five, or six);
- ``Verdict``: ``[origin, request, verdict, version]`` (earlier releases: the first three).

An unversioned message is version 1. A release that changes what a message means raises
``WIRE_VERSION``; an instance that receives a version newer than its own ignores the message,
counts it and logs it (``NewerMessage``) instead of misreading it, so such a release first
ships readers, then writers. Fields a release only adds after the version need no new one.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import msgpack
from prometheus_client import Counter

WIRE_VERSION: Final = 2
# Where the version sits in each kind of message (after the fields of version 1).
ENVELOPE_VERSION_INDEX: Final = 6
VERDICT_VERSION_INDEX: Final = 3

_packer = msgpack.Packer(use_bin_type=True)


def _pack(fields: tuple[object, ...]) -> bytes:
    packed: bytes = _packer.pack(fields)
    return packed


# Named tuples: a message is its own msgpack array, in field order, and building or reading
# one costs what a bare tuple does (a frozen dataclass cost 7x more per group_send).


class WireError(ValueError):
    """Bytes from Redis that are no message of any version."""


class Envelope(NamedTuple):
    """A group message (``target`` None) or a direct ``send`` to a channel of the receiver."""

    origin: str  # the sending instance's id: its own publications come back to it
    dedup_key: str | None
    target: str | None
    ephemeral: bool
    payload: bytes  # the packed message
    # A direct send: the request its verdict answers (None: no answer wanted). A group
    # message: its number, which names it to the relays into named channels.
    tag: int | None
    version: int = WIRE_VERSION

    def encode(self) -> bytes:
        return _pack(self)


_envelope = Envelope._make


def encode_group_envelope(
    origin: str, dedup_key: str | None, ephemeral: bool, payload: bytes, number: int
) -> bytes:
    """``Envelope(origin, dedup_key, None, ephemeral, payload, number).encode()``, at the cost
    of a bare tuple: every group_send pays it."""
    return _pack((origin, dedup_key, None, ephemeral, payload, number, WIRE_VERSION))


class Verdict(NamedTuple):
    """The receiving instance's answer to a direct send: "ok", "full" or "gone"."""

    origin: str
    request: int
    verdict: str
    version: int = WIRE_VERSION

    def encode(self) -> bytes:
        return _pack(self)


class NewerMessage(NamedTuple):
    """A message of a version this instance does not know: not to be read."""

    origin: object
    version: int


def decode(data: bytes) -> Envelope | Verdict | NewerMessage:
    """The message in ``data``; ``WireError`` when it is none."""
    try:
        fields = msgpack.unpackb(data, raw=False, use_list=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise WireError(f"not msgpack: {exc!r}") from exc
    if type(fields) is not tuple or len(fields) < 3:
        raise WireError(f"not a message: {fields!r:.80}")
    size = len(fields)
    if (
        size == 7
        and fields[6] == WIRE_VERSION
        and type(fields[0]) is str
        and (fields[1] is None or type(fields[1]) is str)
        and (fields[2] is None or type(fields[2]) is str)
        and type(fields[3]) is bool
        and type(fields[4]) is bytes
        and (fields[5] is None or type(fields[5]) is int)
    ):
        return _envelope(fields)  # this release's envelope, every field as declared
    # A verdict's second field is its request id; an envelope's is a dedup key or nil.
    index = VERDICT_VERSION_INDEX if type(fields[1]) is int else ENVELOPE_VERSION_INDEX
    version = fields[index] if size > index else 1
    if type(version) is not int:
        raise WireError(f"version is not an integer: {version!r:.40}")
    if version > WIRE_VERSION:
        return NewerMessage(fields[0], version)
    origin = fields[0]
    if type(origin) is not str:
        raise WireError(f"origin is not a string: {origin!r:.40}")
    if index == VERDICT_VERSION_INDEX:
        request, verdict = fields[1], fields[2]
        if type(request) is not int:
            raise WireError(f"request is not an integer: {request!r:.40}")
        return Verdict(origin, request, str(verdict), version)
    if size < 5:
        raise WireError(f"an envelope of {size} fields")
    dedup_key, target, ephemeral, payload = fields[1:5]
    tag = fields[5] if size > 5 else None
    if type(payload) is not bytes or (target is not None and type(target) is not str):
        raise WireError("payload or target of the wrong type")
    return Envelope(
        origin,
        dedup_key if type(dedup_key) is str else None,
        target,
        ephemeral is True,
        payload,
        tag if type(tag) is int else None,
        version,
    )


NEWER_MESSAGES_IGNORED = Counter(
    "realtime_layer_wire_newer_ignored",
    "Messages from other instances of a newer wire version, ignored (a deployment rolling).",
    ["version"],
)
