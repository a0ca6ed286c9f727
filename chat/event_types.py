"""One typed definition per server -> client event (docs/events.md).

Every event frame is built from one of these dataclasses by ``event_frame``, which adds the
envelope (``type``, ``event_id``, ``ts``); tests check every event a socket receives with
``event_check`` (msgspec in strict mode), so a field added, renamed or mistyped in one place
fails everywhere. Durable events (``DURABLE_TYPES``) carry the conversation's ``seq``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import operator
import typing
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Final, Literal

import msgspec

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
    frame: dict[str, Any] = {"type": event.type, "event_id": uuid.uuid4().hex, "ts": now_iso()}
    frame.update(_plain(event))
    return frame


# Field values that are their own plain form (what ``dataclasses.asdict`` returns as is).
_ATOMIC: Final = frozenset({str, int, float, bool, type(None)})


@functools.cache
def _field_names(cls: type[Any]) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(cls))


def _plain(value: Any) -> Any:
    """``dataclasses.asdict`` for the events' fields, without its generic walk: every typing
    delivery builds one, and ``asdict`` deep-copies each string on its way (the same dicts,
    lists and values come out; tests/chat/test_event_types.py compares them)."""
    if type(value) in _ATOMIC:
        return value
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: _plain(getattr(value, name)) for name in _field_names(type(value))}
    return copy.deepcopy(value)


class EventSchemaError(ValueError):
    pass


# What a test checks is the wire frame, so each dataclass gets a strict msgspec twin: msgspec
# ignores unknown keys of a plain dataclass, a Struct with ``forbid_unknown_fields`` refuses
# them; the envelope's ``type`` becomes the Struct's tag, so one tagged union picks the schema.
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


def _strict_twin(cls: type[Any], *, tag: str | None = None) -> type[msgspec.Struct]:
    # Only a field typed as a dataclass itself is twinned: one inside a list or a union would
    # need the same, and none is there today.
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: list[tuple[str, Any]] = [
        (
            f.name,
            _strict_twin(hints[f.name])
            if dataclasses.is_dataclass(hints[f.name])
            else hints[f.name],
        )
        for f in dataclasses.fields(cls)
    ]
    if tag is not None:
        fields += [("event_id", _NonEmpty), ("ts", _NonEmpty)]
    return msgspec.defstruct(
        cls.__name__,
        fields,
        forbid_unknown_fields=True,
        frozen=True,
        tag_field="type" if tag is not None else None,
        tag=tag,
    )


_WIRE_EVENT: Any = functools.reduce(
    operator.or_, (_strict_twin(cls, tag=name) for name, cls in EVENT_CLASSES.items())
)


def event_check(frame: dict[str, Any]) -> None:
    """Raise ``EventSchemaError`` unless ``frame`` is exactly one of the event types: no field
    missing, none unknown, every value of its declared type (a bool is no number here)."""
    try:
        msgspec.convert(frame, type=_WIRE_EVENT, strict=True)
    except msgspec.ValidationError as exc:
        raise EventSchemaError(f"{frame.get('type')!r} event: {exc}") from exc
