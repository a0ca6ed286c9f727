"""One typed definition per server -> client event (docs/events.md).

Every event frame is built from one of these dataclasses by ``event_frame``, which adds the
envelope (``type``, ``event_id``, ``ts``); tests check every event a socket receives with
``event_check``, so a field added, renamed or mistyped in one place fails everywhere. Durable
events (``DURABLE_TYPES``) carry the conversation's ``seq``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal

from presence.store import Status

DURABLE_TYPES: Final = frozenset({"message", "read", "member"})


@dataclasses.dataclass(frozen=True, slots=True)
class MessageBody:
    """A message as REST's 201 body, the ``ack`` and the ``message`` event show it."""

    id: str
    conversation_id: str
    sender_id: str
    body: str
    created_at: str
    seq: int
    client_id: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectedEvent:
    type: ClassVar[str] = "connected"
    connection_id: str
    instance_id: str
    user_id: str
    heartbeat_interval: float


@dataclasses.dataclass(frozen=True, slots=True)
class MessageEvent:
    type: ClassVar[str] = "message"
    conversation_id: str
    seq: int
    message: MessageBody


@dataclasses.dataclass(frozen=True, slots=True)
class ReadEvent:
    type: ClassVar[str] = "read"
    conversation_id: str
    seq: int
    user_id: str
    message_ids: list[str]
    read_at: str


@dataclasses.dataclass(frozen=True, slots=True)
class MemberEvent:
    type: ClassVar[str] = "member"
    conversation_id: str
    seq: int
    user_id: str
    action: Literal["added", "removed"]
    by: str


@dataclasses.dataclass(frozen=True, slots=True)
class TypingEvent:
    type: ClassVar[str] = "typing"
    conversation_id: str
    user_id: str
    is_typing: bool


@dataclasses.dataclass(frozen=True, slots=True)
class PresenceEvent:
    type: ClassVar[str] = "presence"
    user_id: str
    status: Status
    last_seen: str | None


AnyEvent = ConnectedEvent | MessageEvent | ReadEvent | MemberEvent | TypingEvent | PresenceEvent

EVENT_CLASSES: Final[dict[str, type[Any]]] = {
    cls.type: cls
    for cls in (ConnectedEvent, MessageEvent, ReadEvent, MemberEvent, TypingEvent, PresenceEvent)
}


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def frame_time(frame: dict[str, Any]) -> float | None:
    """When ``frame`` was built (its ``ts``, epoch seconds); None if it has no readable one.

    For an event read back from the log: its latency counts from then (``chat.metrics``)."""
    try:
        return datetime.fromisoformat(frame["ts"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


def event_frame(event: AnyEvent) -> dict[str, Any]:
    """The wire frame of ``event``, with a fresh ``event_id`` and ``ts``."""
    return {
        "type": event.type,
        "event_id": uuid.uuid4().hex,
        "ts": now_iso(),
        **dataclasses.asdict(event),
    }


class EventSchemaError(ValueError):
    pass


def _check_value(path: str, value: Any, annotation: Any) -> None:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(annotation):
            try:
                _check_value(path, value, option)
                return
            except EventSchemaError as exc:
                errors.append(str(exc))
        raise EventSchemaError(f"{path}: {value!r} matches none of {annotation}")
    if annotation is type(None):
        if value is not None:
            raise EventSchemaError(f"{path}: expected null, got {value!r}")
        return
    if origin is Literal:
        if value not in typing.get_args(annotation):
            raise EventSchemaError(f"{path}: {value!r} not one of {typing.get_args(annotation)}")
        return
    if origin is list:
        if not isinstance(value, list):
            raise EventSchemaError(f"{path}: expected a list, got {value!r}")
        (item,) = typing.get_args(annotation)
        for index, element in enumerate(value):
            _check_value(f"{path}[{index}]", element, item)
        return
    if dataclasses.is_dataclass(annotation):
        _check_fields(path, value, annotation)
        return
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, annotation)
    if not ok:
        raise EventSchemaError(f"{path}: expected {annotation.__name__}, got {value!r}")


def _check_fields(path: str, value: Any, cls: Any, extra: frozenset[str] = frozenset()) -> None:
    if not isinstance(value, dict):
        raise EventSchemaError(f"{path}: expected an object, got {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    missing = fields - value.keys()
    unknown = value.keys() - fields - extra
    if missing or unknown:
        raise EventSchemaError(f"{path}: missing {sorted(missing)}, unknown {sorted(unknown)}")
    for name in fields:
        _check_value(f"{path}.{name}", value[name], hints[name])


def event_check(frame: dict[str, Any]) -> None:
    """Raise ``EventSchemaError`` unless ``frame`` is exactly one of the event types."""
    cls = EVENT_CLASSES.get(frame.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise EventSchemaError(f"unknown event type {frame.get('type')!r}")
    for key in ("event_id", "ts"):
        if not isinstance(frame.get(key), str) or not frame[key]:
            raise EventSchemaError(f"{cls.type}.{key}: expected a non-empty string")
    _check_fields(cls.type, frame, cls, extra=frozenset({"type", "event_id", "ts"}))
