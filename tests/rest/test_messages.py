"""GET/POST /api/conversations/{id}/messages."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import override_settings

from chat import services
from chat.models import Message


def _send(conversation: Any, sender: Any, n: int) -> list[Message]:
    return [
        services.message_send(conversation=conversation, sender_id=sender.pk, body=f"m{i}")
        for i in range(n)
    ]


def test_post_answers_201_with_the_contract_shape(client_for, bob, alice_bob) -> None:
    response = client_for(bob).post(
        f"/api/conversations/{alice_bob.id}/messages", {"body": "hello"}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "id",
        "conversation_id",
        "sender_id",
        "body",
        "created_at",
        "seq",
        "client_id",
    }
    assert body["conversation_id"] == str(alice_bob.id)
    assert body["sender_id"] == str(bob.pk)
    assert body["body"] == "hello"
    assert Message.objects.get().body == "hello"


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"body": ""},
        {"body": "   \n"},
        {"body": "x" * 4001},
        {"body": 42},
        {"body": None},
        {"body": ["hi"]},
        {"body": "hi", "conversation_id": "x"},
        "hello",
    ],
)
def test_post_refuses_bad_bodies_and_stores_nothing(
    client_for, alice, alice_bob, payload: Any
) -> None:
    response = client_for(alice).post(
        f"/api/conversations/{alice_bob.id}/messages", payload, format="json"
    )
    assert response.status_code == 400
    assert isinstance(response.json(), dict)
    assert Message.objects.count() == 0


def test_the_length_limit_is_the_setting(client_for, alice, alice_bob, settings) -> None:
    with override_settings(REALTIME={**settings.REALTIME, "MESSAGE_MAX_LENGTH": 5}):
        client = client_for(alice)
        url = f"/api/conversations/{alice_bob.id}/messages"
        assert client.post(url, {"body": "12345"}, format="json").status_code == 201
        assert client.post(url, {"body": "123456"}, format="json").status_code == 400


def test_a_stranger_gets_403_even_for_a_bad_body(client_for, carol, alice_bob) -> None:
    url = f"/api/conversations/{alice_bob.id}/messages"
    assert client_for(carol).post(url, {"body": "hi"}, format="json").status_code == 403
    assert client_for(carol).post(url, {}, format="json").status_code == 403
    assert client_for(carol).get(url).status_code == 403
    assert Message.objects.count() == 0


@pytest.mark.parametrize("conversation_id", [str(uuid.uuid4()), "nope"])
def test_unknown_conversation_is_404(client_for, alice, conversation_id: str) -> None:
    url = f"/api/conversations/{conversation_id}/messages"
    assert client_for(alice).get(url).status_code == 404
    assert client_for(alice).post(url, {"body": "hi"}, format="json").status_code == 404


def test_list_is_newest_first_and_pages_by_cursor(client_for, alice, bob, alice_bob) -> None:
    sent = _send(alice_bob, alice, 5)
    client = client_for(bob)
    first = client.get(f"/api/conversations/{alice_bob.id}/messages/?page_size=3").json()
    assert [m["body"] for m in first["results"]] == ["m4", "m3", "m2"]
    # A message arriving while the client pages back changes nothing behind the cursor.
    _send(alice_bob, bob, 1)
    second = client.get(first["next"]).json()
    assert [m["id"] for m in second["results"]] == [str(sent[1].id), str(sent[0].id)]
    assert second["next"] is None


def test_list_query_count_does_not_grow_with_the_page(
    client_for, alice, alice_bob, django_assert_num_queries
) -> None:
    _send(alice_bob, alice, 30)
    client = client_for(alice)
    url = f"/api/conversations/{alice_bob.id}/messages"
    # token + user, the conversation, the participation check, the page.
    with django_assert_num_queries(4):
        small = client.get(url + "?page_size=2")
    with django_assert_num_queries(4):
        large = client.get(url + "?page_size=30")
    assert len(small.json()["results"]) == 2
    assert len(large.json()["results"]) == 30
