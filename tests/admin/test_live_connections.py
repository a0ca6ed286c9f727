"""The admin page of live connections and its disconnect action."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from accounts.models import AuthToken
from accounts.tokens import token_issue
from connections.control import user_group
from connections.layer_messages import (
    CLOSE_MESSAGE_TYPE,
    CONNECTION_CLOSE_VERSION,
    CONNECTION_REVOKE_VERSION,
    REVOKE_MESSAGE_TYPE,
)
from connections.registry import get_registry, reset_registry
from realtime_project.close_codes import WS_4401_UNAUTHORIZED

URL = "/admin/connections/live/"


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    reset_registry()
    yield
    reset_registry()


def _grant(user: Any, *codenames: str) -> Any:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    # has_perm caches what it read; a fresh copy reads the grants.
    return get_user_model().objects.get(pk=user.pk)


@pytest.fixture
def users(db: None) -> dict[str, Any]:
    model = get_user_model()
    admin_user = model.objects.create_user(username="admin", password=None, is_staff=True)
    return {
        "admin": _grant(admin_user, "view_live_connections", "disconnect_live_connections"),
        "alice": model.objects.create_user(username="alice", password=None),
        "bob": model.objects.create_user(username="bob", password=None),
        "root": model.objects.create_superuser(username="root", password=None),
    }


def _browser(user: Any) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


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
            async with asyncio.timeout(2):
                return dict(await layer.receive(channel))

        assert async_to_sync(receive)() == {
            "type": CLOSE_MESSAGE_TYPE,
            "v": CONNECTION_CLOSE_VERSION,
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
            received = []
            for _ in range(count):
                async with asyncio.timeout(2):
                    received.append(dict(await layer.receive(channel)))
            return received

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
        changelist = "/admin/accounts/authtoken/"
        assert staff_browser.get(changelist).status_code == 200
        response = staff_browser.post(
            changelist,
            {"action": "delete_selected", "_selected_action": [grant.token.pk], "post": "yes"},
        )
        assert response.status_code == 302
        assert not AuthToken.objects.filter(pk=grant.token.pk).exists()

        async def receive() -> dict[str, Any]:
            async with asyncio.timeout(2):
                return dict(await layer.receive(channel))

        assert async_to_sync(receive)() == {
            "type": REVOKE_MESSAGE_TYPE,
            "v": CONNECTION_REVOKE_VERSION,
            "token_hash": grant.token.digest,
            "user_id": str(grant.token.user_id),
        }
    finally:
        async_to_sync(layer.group_discard)(group, channel)


def _staff(name: str, *codenames: str) -> Any:
    user = get_user_model().objects.create_user(username=name, password=None, is_staff=True)
    return _grant(user, *codenames)


def test_staff_without_the_view_permission_see_no_connection(users, sockets) -> None:
    browser = _browser(_staff("helpdesk"))
    page = browser.get(URL)
    assert page.status_code == 403
    assert "ua-alice" not in page.content.decode()
    assert URL not in browser.get("/admin/").content.decode()


def test_viewing_does_not_grant_disconnecting(users, sockets) -> None:
    browser = _browser(_staff("viewer", "view_live_connections"))
    page = browser.get(URL).content.decode()
    assert "ua-alice" in page
    assert "Disconnect user everywhere" not in page
    grant = token_issue(user=users["alice"])
    for action in ("disconnect/", "revoke/"):
        assert browser.post(URL + action, {"user_id": str(users["alice"].pk)}).status_code == 403
    assert AuthToken.objects.filter(pk=grant.token.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_non_superuser_cannot_act_on_a_superuser(staff_browser, users) -> None:
    root = users["root"]
    grant = token_issue(user=root)
    layer = get_channel_layer()
    assert layer is not None
    channel = async_to_sync(layer.new_channel)()
    group = user_group(root.pk)
    async_to_sync(layer.group_add)(group, channel)
    try:
        for action in ("disconnect/", "revoke/"):
            assert staff_browser.post(URL + action, {"user_id": str(root.pk)}).status_code == 403
        assert AuthToken.objects.filter(pk=grant.token.pk).exists()

        async def nothing_arrives() -> None:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await layer.receive(channel)

        async_to_sync(nothing_arrives)()
        # A superuser may.
        response = _browser(root).post(URL + "revoke/", {"user_id": str(root.pk)}, follow=True)
        assert "Revoked 1 token(s)" in response.content.decode()
    finally:
        async_to_sync(layer.group_discard)(group, channel)


def test_a_superusers_tokens_are_out_of_a_token_admins_reach(users) -> None:
    token_admin = _staff("tokens", "view_authtoken", "delete_authtoken", "add_authtoken")
    browser = _browser(token_admin)
    roots = token_issue(user=users["root"])
    alices = token_issue(user=users["alice"])
    changelist = "/admin/accounts/authtoken/"
    listing = browser.get(changelist).content.decode()
    assert f"/{alices.token.pk}/" in listing
    assert f"/{roots.token.pk}/" not in listing
    browser.post(
        changelist,
        {"action": "delete_selected", "_selected_action": [roots.token.pk], "post": "yes"},
    )
    assert AuthToken.objects.filter(pk=roots.token.pk).exists()
    # Nor can one mint a token for a superuser (which would be becoming them).
    minted = browser.post(changelist + "add/", {"user": str(users["root"].pk)})
    assert minted.status_code == 403
    assert AuthToken.objects.filter(user=users["root"]).count() == 1
