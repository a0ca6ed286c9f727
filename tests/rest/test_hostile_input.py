"""Input meant to break out of its place: SQL in every text field, a cross-site form post."""

from __future__ import annotations

import pytest
from django.test import Client

from chat.models import Message

pytestmark = pytest.mark.django_db

SQL = "x'); DELETE FROM chat_message; SELECT ('"


def test_sql_in_titles_bodies_client_ids_and_ids_is_stored_as_text(
    client_for, alice, bob, alice_bob
) -> None:
    client = client_for(alice)
    first = client.post(
        f"/api/conversations/{alice_bob.id}/messages", {"body": "first"}, format="json"
    )
    assert first.status_code == 201
    # The write paths build SQL (the one-statement write on PostgreSQL): parameters only.
    sent = client.post(
        f"/api/conversations/{alice_bob.id}/messages",
        {"body": SQL, "client_id": SQL[:64]},
        format="json",
    )
    assert sent.status_code == 201
    assert sent.json()["body"] == SQL
    resent = client.post(
        f"/api/conversations/{alice_bob.id}/messages",
        {"body": SQL, "client_id": SQL[:64]},
        format="json",
    )
    assert (resent.status_code, resent.json()) == (200, sent.json())
    created = client.post(
        "/api/conversations", {"title": SQL, "participant_ids": [str(bob.pk)]}, format="json"
    )
    assert (created.status_code, created.json()["title"]) == (201, SQL)
    assert client.get("/api/users/status", {"ids": f"{bob.pk},{SQL}"}).status_code == 400
    assert client.get(f"/api/conversations/{SQL}").status_code == 404
    # Nothing was deleted: both messages are there, newest first.
    page = client.get(f"/api/conversations/{alice_bob.id}/messages").json()
    assert [m["body"] for m in page["results"]] == [SQL, "first"]
    assert Message.objects.count() == 2


def test_a_session_write_without_the_csrf_token_is_refused(alice) -> None:
    """A page elsewhere can make the browser send the cookie, not the CSRF token."""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    forged = browser.post("/api/user/status", {"status": "busy"}, content_type="application/json")
    assert forged.status_code == 403
    assert "CSRF" in forged.json()["detail"]
    browser.get("/admin/login/")  # any page that sets the CSRF cookie
    token = browser.cookies["csrftoken"].value
    same_site = browser.post(
        "/api/user/status",
        {"status": "busy"},
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert same_site.status_code == 200
