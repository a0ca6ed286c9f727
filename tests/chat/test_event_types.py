"""The event schemas refuse what a client could not rely on: every test socket's events pass
through ``event_check``, so a refusal it misses is a wire change no test would notice."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from chat.event_types import (
    AnyEvent,
    ConnectedEvent,
    EventSchemaError,
    MemberEvent,
    MessageBody,
    MessageEvent,
    PresenceEvent,
    ReadEvent,
    TypingEvent,
    event_check,
    event_frame,
)

MESSAGE = MessageEvent(
    conversation_id="c1",
    seq=3,
    message=MessageBody(
        id="m1",
        conversation_id="c1",
        sender_id="7",
        body="hi",
        created_at="2026-12-06T08:00:00+00:00",
        seq=3,
        client_id=None,
    ),
)

EVERY_EVENT: list[AnyEvent] = [
    ConnectedEvent(connection_id="x", instance_id="i", user_id="7", heartbeat_interval=25.0),
    MESSAGE,
    ReadEvent(conversation_id="c1", seq=4, user_id="7", message_ids=["m1"], read_at="t"),
    MemberEvent(conversation_id="c1", seq=5, user_id="8", action="added", by="7"),
    TypingEvent(conversation_id="c1", user_id="7", is_typing=True),
    PresenceEvent(user_id="7", status="away", last_seen=None),
]


@pytest.mark.parametrize("event", EVERY_EVENT, ids=lambda e: e.type)
def test_every_frame_the_server_builds_passes(event: AnyEvent) -> None:
    event_check(event_frame(event))


@pytest.mark.parametrize("event", EVERY_EVENT, ids=lambda e: e.type)
def test_a_frame_holds_what_asdict_makes_of_its_event(event: AnyEvent) -> None:
    frame = event_frame(event)
    assert list(frame)[:3] == ["type", "event_id", "ts"]
    assert {k: v for k, v in frame.items() if k not in {"event_id", "ts"}} == {
        "type": event.type,
        **dataclasses.asdict(event),
    }
    assert list(frame)[3:] == list(dataclasses.asdict(event))


def test_a_frame_shares_no_list_with_its_event() -> None:
    # A socket may change the frame it sends; the event (and the next frame) must not move.
    event = ReadEvent(conversation_id="c1", seq=4, user_id="7", message_ids=["m1"], read_at="t")
    event_frame(event)["message_ids"].append("m2")
    assert event.message_ids == ["m1"]


def test_an_integer_where_a_float_is_declared_passes() -> None:
    # JSON has one number type: a client reads 25 and 25.0 alike.
    frame = event_frame(EVERY_EVENT[0])
    frame["heartbeat_interval"] = 25
    event_check(frame)


def _message() -> dict[str, Any]:
    return copy.deepcopy(event_frame(MESSAGE))


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(frame: dict[str, Any]) -> None:
        *parents, last = path
        for key in parents:
            frame = frame[key]
        frame[last] = value

    return change


def _drop(path: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    def change(frame: dict[str, Any]) -> None:
        *parents, last = path
        for key in parents:
            frame = frame[key]
        del frame[last]

    return change


REFUSED: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    # unknown fields, at the top and nested
    "unknown field": (_set(("extra",), 1), "unknown field `extra`"),
    "unknown nested field": (_set(("message", "extra"), 1), "unknown field `extra`"),
    # missing fields, the envelope's included
    "missing field": (_drop(("seq",)), "missing required field `seq`"),
    "missing nested field": (_drop(("message", "client_id")), "missing required field"),
    "missing event_id": (_drop(("event_id",)), "missing required field `event_id`"),
    "missing ts": (_drop(("ts",)), "missing required field `ts`"),
    "empty event_id": (_set(("event_id",), ""), "length >= 1"),
    # wrong types
    "string for int": (_set(("seq",), "3"), "Expected `int`, got `str`"),
    "bool for int": (_set(("seq",), True), "Expected `int`, got `bool`"),
    "float for int": (_set(("seq",), 3.5), "Expected `int`, got `float`"),
    "null for str": (_set(("conversation_id",), None), "Expected `str`, got `null`"),
    "int for optional str": (_set(("message", "client_id"), 5), "Expected `str | null`"),
    "list for object": (_set(("message",), []), "Expected `object`, got `array`"),
    # the type tag
    "unknown type": (_set(("type",), "gossip"), "Invalid value 'gossip'"),
    "missing type": (_drop(("type",)), "missing required field `type`"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_frame_off_its_schema_is_refused(case: str) -> None:
    change, said = REFUSED[case]
    frame = _message()
    change(frame)
    with pytest.raises(EventSchemaError) as refused:
        event_check(frame)
    assert said in str(refused.value)


@pytest.mark.parametrize(
    ("event", "field", "value"),
    [
        (EVERY_EVENT[0], "heartbeat_interval", True),
        (EVERY_EVENT[2], "message_ids", ["m1", 2]),
        (EVERY_EVENT[3], "action", "promoted"),
        (EVERY_EVENT[4], "is_typing", 1),
        (EVERY_EVENT[5], "status", "asleep"),
    ],
    ids=["bool-for-float", "list-item", "literal", "int-for-bool", "status"],
)
def test_a_value_outside_its_declared_type_is_refused(
    event: AnyEvent, field: str, value: Any
) -> None:
    frame = event_frame(event)
    frame[field] = value
    with pytest.raises(EventSchemaError):
        event_check(frame)
