"""The admin page of live connections and its disconnect action."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.test import Client

from connections.close_codes import WS_4401_UNAUTHORIZED
from connections.control import CLOSE_MESSAGE_TYPE, REVOKE_MESSAGE_TYPE, user_group
from connections.models import AuthToken
from connections.registry import get_registry, reset_registry
from connections.tokens import token_issue

URL = "/admin/connections/live/"


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    reset_registry()
    yield
    reset_registry()


@pytest.fixture
def users(db: None) -> dict[str, Any]:
    model = get_user_model()
    return {
        "admin": model.objects.create_user(username="admin", password=None, is_staff=True),
        "alice": model.objects.create_user(username="alice", password=None),
        "bob": model.objects.create_user(username="bob", password=None),
    }


@pytest.fixture
def staff_browser(users) -> Client:
    browser = Client()
    browser.force_login(users["admin"])
    return browser


@pytest.fixture
def sockets(users) -> None:
    registry = get_registry()
    for cid, name in (("conn-a1", "alice"), ("conn-a2", "alice"), ("conn-b1", "bob")):
        async_to_sync(registry.register)(
            connection_id=cid, user_id=str(users[name].pk), metadata={"user_agent": f"ua-{name}"}
        )


def test_staff_see_every_live_connection(staff_browser, sockets) -> None:
    page = staff_browser.get(URL)
    assert page.status_code == 200
    html = page.content.decode()
    for expected in ("conn-a1", "conn-a2", "conn-b1", "alice", "bob", "ua-alice"):
        assert expected in html
    assert get_registry().instance_id in html


def test_filter_by_user_id_or_username(staff_browser, users, sockets) -> None:
    for value in ("bob", str(users["bob"].pk)):
        html = staff_browser.get(URL, {"user": value}).content.decode()
        assert "conn-b1" in html
        assert "conn-a1" not in html


def test_filter_by_instance(staff_browser, sockets) -> None:
    here = get_registry().instance_id
    assert "conn-a1" in staff_browser.get(URL, {"instance": here}).content.decode()
    assert "conn-a1" not in staff_browser.get(URL, {"instance": "elsewhere"}).content.decode()


def test_an_unknown_username_shows_nothing(staff_browser, sockets) -> None:
    html = staff_browser.get(URL, {"user": "nobody"}).content.decode()
    assert "conn-" not in html
    assert "No user named" in html


def test_non_staff_and_anonymous_are_sent_to_the_login(users) -> None:
    browser = Client()
    assert browser.get(URL).status_code == 302
    browser.force_login(users["alice"])
    response = browser.get(URL)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    posted = browser.post(URL + "disconnect/", {"user_id": str(users["bob"].pk)})
    assert "/admin/login/" in posted["Location"]


def test_the_admin_index_links_to_the_page(staff_browser) -> None:
    assert URL in staff_browser.get("/admin/").content.decode()


def test_disconnect_closes_the_users_sockets_through_the_layer(staff_browser, users) -> None:
    layer = get_channel_layer()
    assert layer is not None
    channel = async_to_sync(layer.new_channel)()
    group = user_group(users["alice"].pk)
    async_to_sync(layer.group_add)(group, channel)
    try:
        response = staff_browser.post(URL + "disconnect/", {"user_id": str(users["alice"].pk)})
        assert response.status_code == 302

        async def receive() -> dict[str, Any]:
            return dict(await asyncio.wait_for(layer.receive(channel), 2))

        assert async_to_sync(receive)() == {
            "type": CLOSE_MESSAGE_TYPE,
            "code": WS_4401_UNAUTHORIZED,
        }
    finally:
        async_to_sync(layer.group_discard)(group, channel)


def test_disconnect_needs_a_user_and_a_post(staff_browser) -> None:
    assert staff_browser.get(URL + "disconnect/").status_code == 405
    response = staff_browser.post(URL + "disconnect/", {"user_id": "x"}, follow=True)
    assert "Choose a user" in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_revoke_and_disconnect_deletes_the_tokens_and_closes_every_socket(
    staff_browser, users
) -> None:
    alice = users["alice"]
    grants = [token_issue(user=alice), token_issue(user=alice)]
    token_issue(user=users["bob"])
    layer = get_channel_layer()
    assert layer is not None
    channel = async_to_sync(layer.new_channel)()
    group = user_group(alice.pk)
    async_to_sync(layer.group_add)(group, channel)
    try:
        response = staff_browser.post(URL + "revoke/", {"user_id": str(alice.pk)}, follow=True)
        assert "Revoked 2 token(s)" in response.content.decode()
        assert not AuthToken.objects.filter(user=alice).exists()
        assert AuthToken.objects.filter(user=users["bob"]).count() == 1

        async def receive(count: int) -> list[dict[str, Any]]:
            return [dict(await asyncio.wait_for(layer.receive(channel), 2)) for _ in range(count)]

        received = async_to_sync(receive)(3)
        assert {m["type"] for m in received} == {REVOKE_MESSAGE_TYPE}
        assert {m["token_hash"] for m in received} == {
            grants[0].token.digest,
            grants[1].token.digest,
            None,
        }
    finally:
        async_to_sync(layer.group_discard)(group, channel)


@pytest.mark.django_db(transaction=True)
def test_deleting_a_token_in_the_admin_revokes_it(staff_browser, users) -> None:
    users["admin"].is_superuser = True  # the model's delete permission
    users["admin"].save()
    grant = token_issue(user=users["alice"])
    layer = get_channel_layer()
    assert layer is not None
    channel = async_to_sync(layer.new_channel)()
    group = user_group(users["alice"].pk)
    async_to_sync(layer.group_add)(group, channel)
    try:
        changelist = "/admin/connections/authtoken/"
        assert staff_browser.get(changelist).status_code == 200
        response = staff_browser.post(
            changelist,
            {"action": "delete_selected", "_selected_action": [grant.token.pk], "post": "yes"},
        )
        assert response.status_code == 302
        assert not AuthToken.objects.filter(pk=grant.token.pk).exists()

        async def receive() -> dict[str, Any]:
            return dict(await asyncio.wait_for(layer.receive(channel), 2))

        assert async_to_sync(receive)() == {
            "type": REVOKE_MESSAGE_TYPE,
            "token_hash": grant.token.digest,
            "user_id": str(grant.token.user_id),
        }
    finally:
        async_to_sync(layer.group_discard)(group, channel)
