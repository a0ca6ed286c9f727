"""REST calls reach real sockets in-process (the full ASGI stack), the caller's own included."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.test import APIClient

from realtime_project.close_codes import WS_4401_UNAUTHORIZED
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.ws_client import frame_is

pytestmark = pytest.mark.django_db(transaction=True)


async def connected(open_socket, user):
    socket = await open_socket(user)
    await socket.recv_until(frame_is("connected"))
    return socket


@database_sync_to_async
def rest(user: Any, method: str, path: str, body: Any = None) -> Any:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user.token}")
    response = getattr(client, method)(path, body, format="json")
    return response.status_code, response.json()


async def test_a_rest_message_reaches_every_participant_socket_and_the_callers(
    open_socket, demo
) -> None:
    ab = demo.conversations["ab"]
    alice_1 = await connected(open_socket, demo.alice)
    alice_2 = await connected(open_socket, demo.alice)
    bob = await connected(open_socket, demo.bob)
    carol = await connected(open_socket, demo.carol)
    status, body = await rest(
        demo.alice, "post", f"/api/conversations/{ab}/messages", {"body": "hi"}
    )
    assert status == 201
    for socket in (alice_1, alice_2, bob):
        event = await socket.recv_until(frame_is("message"))
        assert event["message"] == body
        assert event["conversation_id"] == ab
    # carol is in "abc" only: a later event she can see arrives, the "ab" message never did.
    await rest(
        demo.alice,
        "post",
        f"/api/conversations/{demo.conversations['abc']}/typing",
        {"is_typing": True},
    )
    await carol.recv_until(frame_is("typing"))
    assert carol.unconsumed(frame_is("message")) == []


async def test_rest_typing_and_read_reach_sockets(open_socket, demo) -> None:
    ab = demo.conversations["ab"]
    bob = await connected(open_socket, demo.bob)
    _, message = await rest(demo.alice, "post", f"/api/conversations/{ab}/messages", {"body": "x"})
    await rest(demo.alice, "post", f"/api/conversations/{ab}/typing", {"is_typing": True})
    typing = await bob.recv_until(frame_is("typing"))
    assert (typing["user_id"], typing["is_typing"]) == (demo.alice.id, True)
    status, read = await rest(
        demo.bob,
        "post",
        "/api/messages/read",
        {"conversation_id": ab, "message_ids": [message["id"]]},
    )
    assert status == 200
    event = await bob.recv_until(frame_is("read"))
    assert event["read_at"] == read["read_at"]
    assert event["user_id"] == demo.bob.id


async def test_a_rest_status_change_reaches_peers(open_socket, demo) -> None:
    bob = await connected(open_socket, demo.bob)
    status, _ = await rest(demo.alice, "post", "/api/user/status", {"status": "busy"})
    assert status == 200
    event = await bob.recv_until(
        lambda f: f.get("type") == "presence" and f.get("status") == "busy"
    )
    assert event["user_id"] == demo.alice.id


async def test_admin_disconnect_closes_the_users_sockets_with_4401(open_socket, demo) -> None:
    alice_1 = await connected(open_socket, demo.alice)
    alice_2 = await connected(open_socket, demo.alice)
    bob = await connected(open_socket, demo.bob)

    @database_sync_to_async
    def disconnect_alice() -> int:
        staff = get_user_model().objects.create_user(username="ops", password=None, is_staff=True)
        # Staff alone may not cut users off: the page's permission does.
        staff.user_permissions.add(Permission.objects.get(codename="disconnect_live_connections"))
        browser = Client()
        browser.force_login(staff)
        response = browser.post("/admin/connections/live/disconnect/", {"user_id": demo.alice.id})
        return response.status_code

    assert await disconnect_alice() == 302
    assert await alice_1.wait_closed() == WS_4401_UNAUTHORIZED
    assert await alice_2.wait_closed() == WS_4401_UNAUTHORIZED
    # bob's socket is untouched: it still answers.
    assert (await bob.request({"type": "ping"}))["type"] == "pong"
