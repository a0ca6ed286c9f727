"""Every WebSocket frame and its REST twin accept and refuse the same input, alike.

Each case is fed to both paths as the same caller (a participant, so only the input decides):
REST through ``APIClient``, the frame through a socket on the in-process stack. Both accept, or
both refuse with the same field errors (REST's 400 body is the frame error's ``details``).
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from rest_framework.test import APIClient

from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.consumer_fixtures import Demo
from tests.support.frames import frame_is

pytestmark = pytest.mark.django_db(transaction=True)

TOO_LONG = "x" * 4001  # MESSAGE_MAX_LENGTH is 4000

TYPING_CASES: list[dict[str, Any]] = [
    {"is_typing": True},
    {"is_typing": False},
    {},
    {"is_typing": "yes"},
    {"is_typing": 1},
    {"is_typing": None},
    {"is_typing": True, "is_typnig": True},
]

STATUS_CASES: list[dict[str, Any]] = [
    {"status": "busy"},
    {"status": "online"},
    {},
    {"status": "sleeping"},
    {"status": 1},
    {"status": None},
    {"status": "away", "x": 1},
]

MESSAGE_CASES: list[dict[str, Any]] = [
    {"body": "hello"},
    {"body": "  padded  "},
    {"body": "once", "client_id": "parity-1"},
    {},
    {"body": ""},
    {"body": "   "},
    {"body": 42},
    {"body": None},
    {"body": TOO_LONG},
    {"body": "hi", "client_id": ""},
    {"body": "hi", "client_id": "c" * 65},
    {"body": "hi", "client_id": 7},
    {"body": "hi", "bdoy": "typo"},
]


def read_cases(conversation_id: str, message_id: str) -> list[dict[str, Any]]:
    return [
        {"conversation_id": conversation_id, "message_ids": [message_id]},
        {},
        {"conversation_id": conversation_id},
        {"conversation_id": conversation_id, "message_ids": []},
        {"conversation_id": conversation_id, "message_ids": ["not-a-uuid"]},
        {"conversation_id": conversation_id, "message_ids": message_id},
        {"conversation_id": "zzz", "message_ids": [message_id]},
        {"conversation_id": conversation_id, "message_ids": [message_id], "extra": 1},
    ]


@pytest.fixture(autouse=True)
def generous_limits(realtime_override: Any) -> None:
    # Dozens of inputs in a row: neither the frame bucket nor the REST throttle may answer.
    realtime_override(RATE_LIMIT_BURST=10_000, RATE_LIMIT_FRAMES_PER_SECOND=10_000)


async def rest_answer(token: str, path: str, body: dict[str, Any]) -> tuple[bool, Any]:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = await sync_to_async(client.post)(path, body, format="json")
    if response.status_code in (200, 201):
        return True, None
    assert response.status_code == 400, (path, body, response.status_code, response.content)
    return False, response.json()


async def frame_answer(socket: Any, frame: dict[str, Any]) -> tuple[bool, Any]:
    reply = await socket.request(frame)
    if reply["type"] == "ack":
        return True, None
    assert reply["type"] == "error" and reply["code"] == "invalid_payload", (frame, reply)
    return False, reply["details"]


async def assert_parity(
    socket: Any,
    token: str,
    *,
    path: str,
    frame_type: str,
    cases: list[dict[str, Any]],
    address: dict[str, Any] | None = None,
) -> None:
    """``address``: what REST carries in the path and the frame among its fields."""
    accepted = 0
    for body in cases:
        rest = await rest_answer(token, path, body)
        ws = await frame_answer(socket, {"type": frame_type, **(address or {}), **body})
        assert rest == ws, f"{frame_type} {body!r}: REST {rest!r}, WebSocket {ws!r}"
        accepted += rest[0]
    # The good inputs were accepted, the rest refused: the comparison above was not vacuous.
    assert 0 < accepted < len(cases)


async def connected(open_socket: Any, user: Any) -> Any:
    socket = await open_socket(user)
    await socket.recv_until(frame_is("connected"))
    return socket


async def test_typing_frame_and_rest_typing_agree(open_socket, demo: Demo) -> None:
    socket = await connected(open_socket, demo.alice)
    conversation_id = demo.conversations["ab"]
    await assert_parity(
        socket,
        demo.alice.token,
        path=f"/api/conversations/{conversation_id}/typing",
        frame_type="typing",
        cases=TYPING_CASES,
        address={"conversation_id": conversation_id},
    )


async def test_status_frame_and_rest_status_agree(open_socket, demo: Demo) -> None:
    socket = await connected(open_socket, demo.alice)
    await assert_parity(
        socket, demo.alice.token, path="/api/user/status", frame_type="status", cases=STATUS_CASES
    )


async def test_message_frame_and_rest_message_agree(open_socket, demo: Demo) -> None:
    socket = await connected(open_socket, demo.alice)
    conversation_id = demo.conversations["ab"]
    await assert_parity(
        socket,
        demo.alice.token,
        path=f"/api/conversations/{conversation_id}/messages",
        frame_type="message",
        cases=MESSAGE_CASES,
        address={"conversation_id": conversation_id},
    )


async def test_read_frame_and_rest_read_agree(open_socket, demo: Demo) -> None:
    alice = await connected(open_socket, demo.alice)
    bob = await connected(open_socket, demo.bob)
    conversation_id = demo.conversations["ab"]
    sent = await alice.request({"type": "message", "conversation_id": conversation_id, "body": "r"})
    await assert_parity(
        bob,
        demo.bob.token,
        path="/api/messages/read",
        frame_type="read",
        cases=read_cases(conversation_id, sent["message"]["id"]),
    )
