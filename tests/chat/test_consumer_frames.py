"""Client frames in-process: every type's ack, authorization, and every kind of bad input."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async

from chat.models import Message, Participant
from realtime_project.close_codes import WS_1009_MESSAGE_TOO_BIG, WS_4429_TOO_MANY
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.consumer_fixtures import Demo
from tests.support.ws_client import frame_is

pytestmark = pytest.mark.django_db(transaction=True)


async def connected(open_socket, user):
    socket = await open_socket(user)
    await socket.recv_until(frame_is("connected"))
    return socket


async def test_ping_answers_pong_with_and_without_ref(open_socket, demo: Demo) -> None:
    socket = await connected(open_socket, demo.alice)
    await socket.send({"type": "ping"})
    assert await socket.recv_until(frame_is("pong")) == {"type": "pong"}
    await socket.send({"type": "ping", "ref": "p-1"})
    assert await socket.recv_until(frame_is("pong")) == {"type": "pong", "ref": "p-1"}
    await socket.send({"type": "ping", "ref": "x" * 64})
    assert await socket.recv_until(frame_is("pong")) == {"type": "pong", "ref": "x" * 64}


async def test_typing_ack_carries_ref_and_result(open_socket, demo: Demo) -> None:
    socket = await connected(open_socket, demo.alice)
    conversation_id = demo.conversations["ab"]
    await socket.send(
        {"type": "typing", "ref": "t-1", "conversation_id": conversation_id, "is_typing": True}
    )
    ack = await socket.recv_until(frame_is("ack"))
    assert ack == {
        "type": "ack",
        "ref": "t-1",
        "conversation_id": conversation_id,
        "is_typing": True,
    }


async def test_message_ack_is_the_rest_201_body(open_socket, demo: Demo) -> None:
    socket = await connected(open_socket, demo.alice)
    conversation_id = demo.conversations["ab"]
    ack = await socket.request(
        {"type": "message", "conversation_id": conversation_id, "body": "hello"}
    )
    assert ack["type"] == "ack"
    message = ack["message"]
    assert set(message) == {
        "id",
        "conversation_id",
        "sender_id",
        "body",
        "created_at",
        "seq",
        "client_id",
    }
    assert (message["conversation_id"], message["sender_id"], message["body"]) == (
        conversation_id,
        demo.alice.id,
        "hello",
    )
    stored = await database_sync_to_async(Message.objects.get)(pk=message["id"])
    assert stored.body == "hello"


async def test_read_ack_has_read_at_and_moves_the_marker(open_socket, demo: Demo) -> None:
    alice = await connected(open_socket, demo.alice)
    bob = await connected(open_socket, demo.bob)
    conversation_id = demo.conversations["ab"]
    sent = await alice.request({"type": "message", "conversation_id": conversation_id, "body": "x"})
    message_id = sent["message"]["id"]
    ack = await bob.request(
        {"type": "read", "conversation_id": conversation_id, "message_ids": [message_id]}
    )
    assert ack["type"] == "ack"
    assert ack["conversation_id"] == conversation_id
    assert ack["message_ids"] == [message_id]
    assert ack["read_at"]
    participant = await database_sync_to_async(Participant.objects.get)(
        conversation_id=conversation_id, user_id=int(demo.bob.id)
    )
    assert str(participant.last_read_message_id) == message_id


async def test_read_of_a_message_from_elsewhere_is_invalid_payload(open_socket, demo) -> None:
    alice = await connected(open_socket, demo.alice)
    sent = await alice.request(
        {"type": "message", "conversation_id": demo.conversations["abc"], "body": "x"}
    )
    error = await alice.request(
        {
            "type": "read",
            "conversation_id": demo.conversations["ab"],
            "message_ids": [sent["message"]["id"]],
        }
    )
    assert error["type"] == "error"
    assert error["code"] == "invalid_payload"
    assert "message_ids" in error["details"]


async def test_status_ack(open_socket, demo: Demo) -> None:
    socket = await connected(open_socket, demo.alice)
    ack = await socket.request({"type": "status", "status": "busy"})
    assert ack["type"] == "ack"
    assert ack["status"] == "busy"
    assert ack["user_id"] == demo.alice.id
    assert ack["updated_at"]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "typing", "is_typing": True}, "not_participant"),
        ({"type": "message", "body": "hi"}, "not_participant"),
        ({"type": "read", "message_ids": [str(uuid.uuid4())]}, "not_participant"),
    ],
)
async def test_strangers_get_not_participant(open_socket, demo: Demo, frame, code) -> None:
    dave = await connected(open_socket, demo.dave)
    error = await dave.request({**frame, "conversation_id": demo.conversations["ab"]})
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["ref"].startswith("r")


@pytest.mark.parametrize("frame_type", ["typing", "message", "read"])
async def test_unknown_conversation_is_not_found(open_socket, demo: Demo, frame_type) -> None:
    alice = await connected(open_socket, demo.alice)
    # Only the frame's own fields: an unknown one is refused before the conversation is looked up.
    own_fields: dict[str, dict[str, Any]] = {
        "typing": {"is_typing": True},
        "message": {"body": "hi"},
        "read": {"message_ids": [str(uuid.uuid4())]},
    }
    frame = {"type": frame_type, "conversation_id": str(uuid.uuid4()), **own_fields[frame_type]}
    error = await alice.request(frame)
    assert (error["type"], error["code"]) == ("error", "not_found")


async def test_invalid_json(open_socket, demo: Demo) -> None:
    socket = await connected(open_socket, demo.alice)
    await socket.send('{"type": "ping",')
    error = await socket.recv_until(frame_is("error"))
    assert error["code"] == "invalid_json"
    assert error["message"]
    assert "ref" not in error
    # The socket goes on working.
    assert (await socket.request({"type": "ping"}))["type"] == "pong"


async def test_unknown_type_echoes_ref(open_socket, demo: Demo) -> None:
    socket = await connected(open_socket, demo.alice)
    await socket.send({"type": "dance", "ref": "d1"})
    error = await socket.recv_until(frame_is("error"))
    assert error == {
        "type": "error",
        "ref": "d1",
        "code": "unknown_type",
        "message": error["message"],
    }


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ({"type": "typing", "conversation_id": "CONV", "is_typing": "yes"}, "is_typing"),
        ({"type": "typing", "conversation_id": "not-a-uuid", "is_typing": True}, "conversation_id"),
        ({"type": "message", "conversation_id": "CONV", "body": "   "}, "body"),
        ({"type": "message", "conversation_id": "CONV"}, "body"),
        ({"type": "message", "conversation_id": "CONV", "body": 42}, "body"),
        ({"type": "read", "conversation_id": "CONV", "message_ids": []}, "message_ids"),
        ({"type": "status", "status": "sleepy"}, "status"),
        ({"ref": "no-type"}, "type"),
    ],
)
async def test_wrong_fields_are_invalid_payload(open_socket, demo: Demo, frame, field) -> None:
    socket = await connected(open_socket, demo.alice)
    frame = {k: (demo.conversations["ab"] if v == "CONV" else v) for k, v in {**frame}.items()}
    frame.setdefault("ref", "p1")
    await socket.send(frame)
    error = await socket.recv_until(lambda f: f.get("ref") == frame["ref"])
    assert (error["type"], error["code"]) == ("error", "invalid_payload")
    assert field in error["details"]


async def test_message_over_the_length_limit_is_invalid_payload(
    open_socket, demo: Demo, realtime_override
) -> None:
    realtime_override(MESSAGE_MAX_LENGTH=10)
    socket = await connected(open_socket, demo.alice)
    error = await socket.request(
        {"type": "message", "conversation_id": demo.conversations["ab"], "body": "x" * 11}
    )
    assert error["code"] == "invalid_payload"
    assert "body" in error["details"]


@pytest.mark.parametrize("ref", [12, "x" * 65, None])
async def test_bad_ref_is_invalid_payload_and_not_echoed(open_socket, demo: Demo, ref) -> None:
    socket = await connected(open_socket, demo.alice)
    await socket.send({"type": "ping", "ref": ref})
    error = await socket.recv_until(frame_is("error"))
    assert error["code"] == "invalid_payload"
    assert "ref" not in error
    assert "ref" in error["details"]


@pytest.mark.parametrize("text", ["[1, 2]", '"ping"', "null"])
async def test_json_that_is_not_an_object_is_invalid_payload(open_socket, demo, text) -> None:
    socket = await connected(open_socket, demo.alice)
    await socket.send(text)
    assert (await socket.recv_until(frame_is("error")))["code"] == "invalid_payload"


async def test_oversized_frame_closes_1009_and_spares_others(
    open_socket, demo: Demo, realtime_override
) -> None:
    realtime_override(WS_MAX_FRAME_BYTES=256)
    alice = await connected(open_socket, demo.alice)
    bob = await connected(open_socket, demo.bob)
    # Exactly at the limit is fine (multi-byte characters count as bytes).
    at_limit = json.dumps({"type": "ping", "ref": "a"})
    at_limit += " " * (256 - len(at_limit))
    await alice.send(at_limit)
    assert (await alice.recv_until(frame_is("pong")))["ref"] == "a"
    await alice.send(json.dumps({"type": "ping", "ref": "é" * 64}) + " " * 120)
    assert await alice.wait_closed() == WS_1009_MESSAGE_TOO_BIG
    assert (await bob.request({"type": "ping"}))["type"] == "pong"


async def test_flood_gets_rate_limited_then_closed_4429(
    open_socket, demo: Demo, realtime_override
) -> None:
    realtime_override(
        RATE_LIMIT_FRAMES_PER_SECOND=0.1, RATE_LIMIT_BURST=3, RATE_LIMIT_MAX_STRIKES=4
    )
    alice = await connected(open_socket, demo.alice)
    bob = await connected(open_socket, demo.bob)
    for n in range(10):
        await alice.send({"type": "ping", "ref": str(n)})
    assert await alice.wait_closed() == WS_4429_TOO_MANY
    replies = [
        (f["type"], f.get("ref"), f.get("code")) for f in alice.frames if "event_id" not in f
    ]
    assert replies == [
        ("pong", "0", None),
        ("pong", "1", None),
        ("pong", "2", None),
        ("error", None, "rate_limited"),
        ("error", None, "rate_limited"),
        ("error", None, "rate_limited"),
    ]
    assert (await bob.request({"type": "ping"}))["type"] == "pong"


async def test_binary_frames_are_read_as_utf8_json(open_socket, demo: Demo) -> None:
    socket = await connected(open_socket, demo.alice)
    await socket.send(b'{"type": "ping", "ref": "b"}')
    assert (await socket.recv_until(frame_is("pong")))["ref"] == "b"
    await socket.send(b"\xff\xfe")
    assert (await socket.recv_until(frame_is("error")))["code"] == "invalid_json"


async def test_a_repeated_typing_frame_is_judged_as_the_first(open_socket, demo: Demo) -> None:
    # The typing frame's validation is remembered per (conversation, flag): a repeat must be
    # judged exactly as the first, whatever else the frame carries.
    socket = await connected(open_socket, demo.alice)
    conversation_id = demo.conversations["ab"]
    for _ in range(2):
        ack = await socket.request(
            {"type": "typing", "conversation_id": conversation_id.upper(), "is_typing": True}
        )
        assert ack == {
            "type": "ack",
            "ref": ack["ref"],
            "conversation_id": conversation_id,
            "is_typing": True,
        }
        extra = await socket.request(
            {"type": "typing", "conversation_id": conversation_id, "is_typing": True, "x": 1}
        )
        assert extra["code"] == "invalid_payload"
        assert extra["details"] == {"x": ["Unknown field."]}
        bad = await socket.request({"type": "typing", "conversation_id": "no", "is_typing": True})
        assert bad["code"] == "invalid_payload"
        assert set(bad["details"]) == {"conversation_id"}
