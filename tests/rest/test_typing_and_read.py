"""POST /api/conversations/{id}/typing and POST /api/messages/read."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from chat import services
from chat.models import Participant


def test_typing_answers_the_contract_shape(client_for, alice, alice_bob) -> None:
    response = client_for(alice).post(
        f"/api/conversations/{alice_bob.id}/typing", {"is_typing": True}, format="json"
    )
    assert response.status_code == 200
    assert response.json() == {"conversation_id": str(alice_bob.id), "is_typing": True}


@pytest.mark.parametrize(
    "payload", [{}, {"is_typing": "yes"}, {"is_typing": 1}, {"is_typing": None}, [True]]
)
def test_typing_refuses_anything_but_a_json_boolean(client_for, alice, alice_bob, payload) -> None:
    response = client_for(alice).post(
        f"/api/conversations/{alice_bob.id}/typing", payload, format="json"
    )
    assert response.status_code == 400


def test_typing_by_a_stranger_or_nowhere(client_for, carol, alice_bob) -> None:
    client = client_for(carol)
    ok = {"is_typing": True}
    assert (
        client.post(f"/api/conversations/{alice_bob.id}/typing", ok, format="json").status_code
        == 403
    )
    assert (
        client.post(f"/api/conversations/{uuid.uuid4()}/typing", ok, format="json").status_code
        == 404
    )
    assert client.post("/api/conversations/zzz/typing", ok, format="json").status_code == 404


def _messages(conversation: Any, sender: Any, n: int) -> list[str]:
    return [
        str(services.message_send(conversation=conversation, sender_id=sender.pk, body=f"m{i}").id)
        for i in range(n)
    ]


def test_read_records_the_newest_message_and_answers_the_contract_shape(
    client_for, alice, bob, alice_bob
) -> None:
    ids = _messages(alice_bob, alice, 3)
    response = client_for(bob).post(
        "/api/messages/read",
        {"conversation_id": str(alice_bob.id), "message_ids": [ids[2], ids[0]]},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"conversation_id", "message_ids", "read_at", "seq"}
    assert body["message_ids"] == [ids[2], ids[0]]
    participant = Participant.objects.get(conversation=alice_bob, user=bob)
    assert str(participant.last_read_message_id) == ids[2]


def test_read_refuses_ids_of_another_conversation_and_changes_nothing(
    client_for, alice, bob, alice_bob
) -> None:
    other = services.conversation_create(
        creator_id=alice.pk, title="o", participant_ids=[str(bob.pk)]
    )
    foreign = _messages(other, alice, 1)
    own = _messages(alice_bob, alice, 1)
    response = client_for(bob).post(
        "/api/messages/read",
        {"conversation_id": str(alice_bob.id), "message_ids": [*own, *foreign]},
        format="json",
    )
    assert response.status_code == 400
    assert "message_ids" in response.json()
    assert Participant.objects.get(conversation=alice_bob, user=bob).last_read_message_id is None


SAME = "<the conversation>"


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"conversation_id": SAME},
        {"conversation_id": SAME, "message_ids": []},
        {"conversation_id": SAME, "message_ids": "abc"},
        {"conversation_id": SAME, "message_ids": ["not-a-uuid"]},
        {"conversation_id": SAME, "message_ids": [str(uuid.uuid4())] * 501},
        {"conversation_id": "nope", "message_ids": [str(uuid.uuid4())]},
        {"conversation_id": None, "message_ids": [str(uuid.uuid4())]},
        {"message_ids": [str(uuid.uuid4())]},
    ],
)
def test_read_refuses_malformed_bodies(client_for, bob, alice_bob, payload) -> None:
    if payload.get("conversation_id") == SAME:
        payload = {**payload, "conversation_id": str(alice_bob.id)}
    response = client_for(bob).post("/api/messages/read", payload, format="json")
    assert response.status_code == 400
    assert isinstance(response.json(), dict)


def test_read_by_a_stranger_is_403_and_for_nothing_404(client_for, alice, carol, alice_bob) -> None:
    ids = _messages(alice_bob, alice, 1)
    client = client_for(carol)
    body = {"conversation_id": str(alice_bob.id), "message_ids": ids}
    assert client.post("/api/messages/read", body, format="json").status_code == 403
    body["conversation_id"] = str(uuid.uuid4())
    assert client.post("/api/messages/read", body, format="json").status_code == 404
