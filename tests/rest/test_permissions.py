"""The permission matrix: anonymous / user / participant / staff, for every endpoint."""

from __future__ import annotations

import uuid

import pytest

# (method, path, body); "{c}" is a conversation of alice and bob.
ENDPOINTS = [
    ("get", "/api/conversations", None),
    ("post", "/api/conversations", {"title": "t", "participant_ids": []}),
    ("get", "/api/conversations/{c}", None),
    ("get", "/api/conversations/{c}/messages", None),
    ("post", "/api/conversations/{c}/messages", {"body": "hi"}),
    ("post", "/api/conversations/{c}/typing", {"is_typing": True}),
    ("post", "/api/messages/read", {"conversation_id": "{c}", "message_ids": ["{m}"]}),
    ("get", "/api/connections/stats", None),
    ("get", "/api/", None),
]
CONVERSATION_ENDPOINTS = [e for e in ENDPOINTS if "{c}" in e[1] or "{c}" in str(e[2])]


def _fill(value, conversation_id: str, message_id: str):
    if isinstance(value, str):
        return value.replace("{c}", conversation_id).replace("{m}", message_id)
    if isinstance(value, dict):
        return {k: _fill(v, conversation_id, message_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, conversation_id, message_id) for v in value]
    return value


@pytest.fixture
def message_id(alice, alice_bob) -> str:
    from chat import services

    return str(services.message_send(conversation=alice_bob, sender_id=alice.pk, body="x").id)


def _call(client, method: str, path: str, body, conversation_id: str, message_id: str):
    path = _fill(path, conversation_id, message_id)
    return getattr(client, method)(path, _fill(body, conversation_id, message_id), format="json")


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_anonymous_gets_401(anon, alice_bob, message_id, method, path, body) -> None:
    response = _call(anon, method, path, body, str(alice_bob.id), message_id)
    assert response.status_code == 401
    assert set(response.json()) == {"detail"}
    assert response["WWW-Authenticate"].startswith("Token")


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_a_bad_token_gets_401(anon, alice_bob, message_id, method, path, body) -> None:
    anon.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = _call(anon, method, path, body, str(alice_bob.id), message_id)
    assert response.status_code == 401


@pytest.mark.parametrize(("method", "path", "body"), CONVERSATION_ENDPOINTS)
def test_a_non_participant_gets_403_and_a_participant_succeeds(
    client_for, bob, carol, staff, alice_bob, message_id, method, path, body
) -> None:
    args = (method, path, body, str(alice_bob.id), message_id)
    for outsider in (carol, staff):  # staff is no participant either
        response = _call(client_for(outsider), *args)
        assert response.status_code == 403, outsider
        assert set(response.json()) == {"detail"}
    assert _call(client_for(bob), *args).status_code in (200, 201)


@pytest.mark.parametrize(("method", "path", "body"), CONVERSATION_ENDPOINTS)
def test_a_missing_conversation_is_404_for_anyone(
    client_for, carol, alice_bob, message_id, method, path, body
) -> None:
    response = _call(client_for(carol), method, path, body, str(uuid.uuid4()), message_id)
    assert response.status_code == 404


def test_stats_are_for_staff_only(client_for, alice, staff) -> None:
    assert client_for(alice).get("/api/connections/stats").status_code == 403
    assert client_for(staff).get("/api/connections/stats").status_code == 200


def test_the_browsable_api_works_for_a_logged_in_developer(alice, alice_bob) -> None:
    from django.test import Client

    browser = Client()
    browser.force_login(alice)
    page = browser.get(f"/api/conversations/{alice_bob.id}/messages", HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    assert b"Messages" in page.content
    assert "text/html" in page["Content-Type"]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_a_trailing_slash_is_the_same_endpoint_never_a_redirect(
    anon, alice_bob, message_id, method, path, body
) -> None:
    slashed = path if path.endswith("/") else path + "/"
    response = _call(anon, method, slashed, body, str(alice_bob.id), message_id)
    assert response.status_code == 401
