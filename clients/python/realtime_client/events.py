"""One typed class per server frame of the wire contract, parsed from its JSON object.

``parse_frame`` never raises on a frame of a type it does not know (a newer server may send
more): it returns ``UnknownFrame``. A known type with a missing or mistyped field raises
``FrameError``, since acting on half an event could break the ordering promises.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Literal, TypeAlias

DURABLE_TYPES: Final = frozenset({"message", "read", "member"})

Frame: TypeAlias = dict[str, Any]


class FrameError(ValueError):
    """A frame of a known type is not shaped as the contract says."""


def _str(frame: Mapping[str, Any], key: str) -> str:
    value = frame.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FrameError(f"{frame.get('type')}: {key!r} is {value!r}, not a string")
    return str(value)


def _opt_str(frame: Mapping[str, Any], key: str) -> str | None:
    return None if frame.get(key) is None else _str(frame, key)


def _int(frame: Mapping[str, Any], key: str) -> int:
    value = frame.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FrameError(f"{frame.get('type')}: {key!r} is {value!r}, not an integer")
    return value


def _bool(frame: Mapping[str, Any], key: str) -> bool:
    value = frame.get(key)
    if not isinstance(value, bool):
        raise FrameError(f"{frame.get('type')}: {key!r} is {value!r}, not a boolean")
    return value


def _ids(frame: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = frame.get(key)
    if not isinstance(value, list):
        raise FrameError(f"{frame.get('type')}: {key!r} is {value!r}, not a list")
    return tuple(str(item) for item in value)


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """A stored message, as REST's 201 body, the ``ack`` and the ``message`` event show it."""

    id: str
    conversation_id: str
    sender_id: str
    body: str
    created_at: str
    seq: int
    client_id: str | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Message:
        if not isinstance(data, Mapping):
            raise FrameError(f"message is {data!r}, not an object")
        return cls(
            id=_str(data, "id"),
            conversation_id=_str(data, "conversation_id"),
            sender_id=_str(data, "sender_id"),
            body=str(data.get("body", "")),
            created_at=_str(data, "created_at"),
            seq=_int(data, "seq"),
            client_id=_opt_str(data, "client_id"),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Connected:
    type: ClassVar[str] = "connected"
    event_id: str
    ts: str
    connection_id: str
    instance_id: str
    user_id: str
    heartbeat_interval: float


@dataclasses.dataclass(frozen=True, slots=True)
class MessageEvent:
    type: ClassVar[str] = "message"
    event_id: str
    ts: str
    conversation_id: str
    seq: int
    message: Message


@dataclasses.dataclass(frozen=True, slots=True)
class ReadEvent:
    type: ClassVar[str] = "read"
    event_id: str
    ts: str
    conversation_id: str
    seq: int
    user_id: str
    message_ids: tuple[str, ...]
    read_at: str


@dataclasses.dataclass(frozen=True, slots=True)
class MemberEvent:
    type: ClassVar[str] = "member"
    event_id: str
    ts: str
    conversation_id: str
    seq: int
    user_id: str
    action: Literal["added", "removed"]
    by: str


@dataclasses.dataclass(frozen=True, slots=True)
class TypingEvent:
    """Ephemeral: no ``seq``, delivered as it comes, may be lost in an outage."""

    type: ClassVar[str] = "typing"
    event_id: str
    ts: str
    conversation_id: str
    user_id: str
    is_typing: bool


@dataclasses.dataclass(frozen=True, slots=True)
class PresenceEvent:
    """Ephemeral: no ``seq``, delivered as it comes."""

    type: ClassVar[str] = "presence"
    event_id: str
    ts: str
    user_id: str
    status: str
    last_seen: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Ack:
    """The reply to a client frame with a ``ref``; ``data`` holds the whole frame (the result
    fields depend on what was asked: ``message``, ``read_at``, ``conversations``...)."""

    type: ClassVar[str] = "ack"
    ref: str
    data: Frame

    @property
    def message(self) -> Message | None:
        raw = self.data.get("message")
        return Message.parse(raw) if isinstance(raw, Mapping) else None


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorFrame:
    type: ClassVar[str] = "error"
    ref: str | None
    code: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Pong:
    type: ClassVar[str] = "pong"


@dataclasses.dataclass(frozen=True, slots=True)
class UnknownFrame:
    """A frame of a type this version does not know; kept whole."""

    type: str
    data: Frame


# Made by the client itself, never sent by the server.


@dataclasses.dataclass(frozen=True, slots=True)
class Resumed:
    """The resume ``ack``'s answers, after the replayed events were handed out:
    ``{conversation_id: (recovered, latest seq)}``."""

    type: ClassVar[str] = "resumed"
    conversations: dict[str, tuple[bool, int | None]]


@dataclasses.dataclass(frozen=True, slots=True)
class Reset:
    """The client cannot catch ``conversation_id`` up event by event: ``not_participant``
    (the user no longer takes part; the client forgot it) or ``too_far_behind`` (the client
    moved its position to ``seq``). Reload the conversation by REST."""

    type: ClassVar[str] = "reset"
    conversation_id: str
    reason: Literal["not_participant", "too_far_behind"]
    seq: int | None


DurableEvent: TypeAlias = MessageEvent | ReadEvent | MemberEvent
Event: TypeAlias = DurableEvent | TypingEvent | PresenceEvent | Resumed | Reset | UnknownFrame
ServerFrame: TypeAlias = (
    Connected
    | MessageEvent
    | ReadEvent
    | MemberEvent
    | TypingEvent
    | PresenceEvent
    | Ack
    | ErrorFrame
    | Pong
    | UnknownFrame
)


def parse_frame(frame: Mapping[str, Any]) -> ServerFrame:
    """The typed form of one server frame (a decoded JSON object)."""
    if not isinstance(frame, Mapping):
        raise FrameError(f"a frame is a JSON object, not {frame!r}")
    kind = frame.get("type")
    envelope = {"event_id": str(frame.get("event_id", "")), "ts": str(frame.get("ts", ""))}
    if kind == "connected":
        interval = frame.get("heartbeat_interval")
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise FrameError(f"connected: heartbeat_interval is {interval!r}")
        return Connected(
            **envelope,
            connection_id=_str(frame, "connection_id"),
            instance_id=_str(frame, "instance_id"),
            user_id=_str(frame, "user_id"),
            heartbeat_interval=float(interval),
        )
    if kind == "message":
        return MessageEvent(
            **envelope,
            conversation_id=_str(frame, "conversation_id"),
            seq=_int(frame, "seq"),
            message=Message.parse(frame.get("message")),  # type: ignore[arg-type]
        )
    if kind == "read":
        return ReadEvent(
            **envelope,
            conversation_id=_str(frame, "conversation_id"),
            seq=_int(frame, "seq"),
            user_id=_str(frame, "user_id"),
            message_ids=_ids(frame, "message_ids"),
            read_at=_str(frame, "read_at"),
        )
    if kind == "member":
        action = frame.get("action")
        if action not in ("added", "removed"):
            raise FrameError(f"member: action is {action!r}")
        return MemberEvent(
            **envelope,
            conversation_id=_str(frame, "conversation_id"),
            seq=_int(frame, "seq"),
            user_id=_str(frame, "user_id"),
            action=action,
            by=_str(frame, "by"),
        )
    if kind == "typing":
        return TypingEvent(
            **envelope,
            conversation_id=_str(frame, "conversation_id"),
            user_id=_str(frame, "user_id"),
            is_typing=_bool(frame, "is_typing"),
        )
    if kind == "presence":
        return PresenceEvent(
            **envelope,
            user_id=_str(frame, "user_id"),
            status=_str(frame, "status"),
            last_seen=_opt_str(frame, "last_seen"),
        )
    if kind == "ack":
        return Ack(ref=_str(frame, "ref"), data=dict(frame))
    if kind == "error":
        return ErrorFrame(
            ref=_opt_str(frame, "ref"),
            code=str(frame.get("code", "")),
            message=str(frame.get("message", "")),
        )
    if kind == "pong":
        return Pong()
    return UnknownFrame(type=str(kind), data=dict(frame))
