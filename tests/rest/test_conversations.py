"""GET/POST /api/conversations and GET /api/conversations/{id}."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest

from chat import services
from chat.models import Conversation, Participant


def test_create_adds_the_caller_and_answers_the_contract_shape(client_for, alice, bob) -> None:
    response = client_for(alice).post(
        "/api/conversations",
        {"title": "lunch", "participant_ids": [str(bob.pk)]},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "title", "participant_ids", "participants", "created_at", "last_seq"}
    assert body["title"] == "lunch"
    assert body["participant_ids"] == sorted([str(alice.pk), str(bob.pk)])
    assert datetime.fromisoformat(body["created_at"]).utcoffset() is not None
    assert Participant.objects.filter(conversation_id=body["id"]).count() == 2


@pytest.mark.parametrize(
    "payload",
    [
        {"title": "x", "participant_ids": ["999999"]},
        {"title": "x", "participant_ids": ["not-an-id"]},
        {"title": "x", "participant_ids": "2"},
        {"title": 5, "participant_ids": []},
        {"title": "x" * 201},
        {"title": "x", "participant_ids": [], "admins": []},
        ["not", "an", "object"],
    ],
)
def test_create_refuses_bad_input_and_creates_nothing(client_for, alice, payload: Any) -> None:
    response = client_for(alice).post("/api/conversations", payload, format="json")
    assert response.status_code == 400
    assert isinstance(response.json(), dict)
    assert Conversation.objects.count() == 0


def test_create_refuses_a_body_that_is_not_json(client_for, alice) -> None:
    response = client_for(alice).post(
        "/api/conversations", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert "detail" in response.json()


def test_list_shows_only_the_callers_conversations_newest_first(
    client_for, alice, bob, carol
) -> None:
    first = services.conversation_create(creator_id=alice.pk, title="one", participant_ids=[])
    second = services.conversation_create(
        creator_id=alice.pk, title="two", participant_ids=[str(bob.pk)]
    )
    services.conversation_create(creator_id=carol.pk, title="not alice's", participant_ids=[])
    body = client_for(alice).get("/api/conversations").json()
    assert [c["id"] for c in body["results"]] == [str(second.id), str(first.id)]
    assert body["results"][0]["participant_ids"] == sorted([str(alice.pk), str(bob.pk)])
    assert body["next"] is None


def test_list_pages_with_a_cursor_without_repeats_or_gaps(client_for, alice) -> None:
    made = [
        services.conversation_create(creator_id=alice.pk, title=f"c{i}", participant_ids=[])
        for i in range(7)
    ]
    client = client_for(alice)
    seen: list[str] = []
    url: str | None = "/api/conversations?page_size=3"
    while url:
        page = client.get(url).json()
        seen += [c["id"] for c in page["results"]]
        url = page["next"]
    assert seen == [str(c.id) for c in reversed(made)]


def test_list_query_count_does_not_grow_with_the_page(
    client_for, alice, bob, carol, django_assert_num_queries
) -> None:
    for i in range(12):
        services.conversation_create(
            creator_id=alice.pk, title=f"c{i}", participant_ids=[str(bob.pk), str(carol.pk)]
        )
    client = client_for(alice)
    client.get("/api/conversations?page_size=1")  # warm the token lookup path
    # token + user, the page, the page's participants.
    with django_assert_num_queries(3):
        small = client.get("/api/conversations?page_size=2")
    with django_assert_num_queries(3):
        large = client.get("/api/conversations?page_size=12")
    assert len(small.json()["results"]) == 2
    assert len(large.json()["results"]) == 12


def test_a_bad_cursor_is_a_404_not_a_500(client_for, alice) -> None:
    response = client_for(alice).get("/api/conversations?cursor=garbage")
    assert response.status_code == 404
    assert "detail" in response.json()


def test_retrieve_for_a_participant(client_for, bob, alice_bob) -> None:
    for path in (f"/api/conversations/{alice_bob.id}", f"/api/conversations/{alice_bob.id}/"):
        response = client_for(bob).get(path)
        assert response.status_code == 200
        assert response.json()["id"] == str(alice_bob.id)
        assert response.json()["title"] == "alice-bob"


def test_retrieve_by_a_stranger_is_403_and_reveals_nothing(client_for, carol, alice_bob) -> None:
    response = client_for(carol).get(f"/api/conversations/{alice_bob.id}")
    assert response.status_code == 403
    assert set(response.json()) == {"detail"}
    assert "alice" not in response.content.decode()


@pytest.mark.parametrize("conversation_id", [str(uuid.uuid4()), "not-a-uuid", "12", "%20"])
def test_retrieve_unknown_or_malformed_id_is_404(client_for, alice, conversation_id) -> None:
    response = client_for(alice).get(f"/api/conversations/{conversation_id}")
    assert response.status_code == 404
    assert set(response.json()) == {"detail"}
