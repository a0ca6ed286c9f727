"""REST's side of delivery: seqs in bodies, the events endpoint, idempotent sends."""

from __future__ import annotations

import pytest

from chat import services
from chat.event_types import event_check
from chat.events import conversation_group

pytestmark = pytest.mark.django_db


def post_message(client, conversation, body, **extra):
    return client.post(
        f"/api/conversations/{conversation.id}/messages", {"body": body, **extra}, format="json"
    )


def test_message_bodies_and_conversations_carry_seqs(client_for, alice, bob, alice_bob) -> None:
    client = client_for(alice)
    first = post_message(client, alice_bob, "one").json()
    second = post_message(client, alice_bob, "two").json()
    assert (first["seq"], second["seq"]) == (1, 2)
    assert first["client_id"] is None
    read = client_for(bob).post(
        "/api/messages/read",
        {"conversation_id": str(alice_bob.id), "message_ids": [second["id"]]},
        format="json",
    )
    assert read.status_code == 200
    detail = client.get(f"/api/conversations/{alice_bob.id}").json()
    assert detail["last_seq"] == 3
    listed = client.get("/api/conversations").json()["results"]
    assert [c["last_seq"] for c in listed] == [3]
    assert detail["participants"] == [
        {"id": str(alice.pk), "username": "alice"},
        {"id": str(bob.pk), "username": "bob"},
    ]


def test_events_after_a_seq_are_the_logged_frames_in_order(
    client_for, alice, bob, alice_bob, settings
) -> None:
    client = client_for(alice)
    for i in range(4):
        post_message(client, alice_bob, f"m{i}")
    response = client_for(bob).get(f"/api/conversations/{alice_bob.id}/events?after_seq=1")
    assert response.status_code == 200
    body = response.json()
    assert body["last_seq"] == 4
    assert [e["seq"] for e in body["events"]] == [2, 3, 4]
    for event in body["events"]:
        event_check(event)
    assert [e["message"]["body"] for e in body["events"]] == ["m1", "m2", "m3"]
    settings.REALTIME = {**settings.REALTIME, "RESUME_MAX_EVENTS": 2}
    page = client.get(f"/api/conversations/{alice_bob.id}/events/").json()
    assert [e["seq"] for e in page["events"]] == [1, 2]
    assert page["last_seq"] == 4


@pytest.mark.parametrize("query", ["after_seq=-1", "after_seq=x", "after_seq=1.5"])
def test_events_refuse_a_bad_position(client_for, alice, alice_bob, query) -> None:
    response = client_for(alice).get(f"/api/conversations/{alice_bob.id}/events?{query}")
    assert response.status_code == 400
    assert "after_seq" in response.json()


def test_events_are_for_participants_only(client_for, carol, alice_bob, anon) -> None:
    path = f"/api/conversations/{alice_bob.id}/events"
    assert client_for(carol).get(path).status_code == 403
    assert anon.get(path).status_code == 401
    missing = "/api/conversations/00000000-0000-0000-0000-000000000000/events"
    assert client_for(carol).get(missing).status_code == 404


def test_a_resend_with_the_same_client_id_returns_the_first_and_emits_nothing(
    client_for, alice, alice_bob, listen, django_capture_on_commit_callbacks
) -> None:
    listener = listen(conversation_group(alice_bob.id))
    client = client_for(alice)
    with django_capture_on_commit_callbacks(execute=True):
        first = post_message(client, alice_bob, "hello", client_id="abc")
        second = post_message(client, alice_bob, "hello again", client_id="abc")
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json() == first.json()
    assert first.json()["client_id"] == "abc"
    assert listener.receive()["event"]["seq"] == 1
    with pytest.raises(TimeoutError):
        listener.receive(timeout=0.2)
    events = client.get(f"/api/conversations/{alice_bob.id}/events").json()["events"]
    assert [e["seq"] for e in events] == [1]


def test_a_client_id_reused_in_another_conversation_is_a_400_and_leaks_nothing(
    client_for, alice, bob, carol, alice_bob, django_capture_on_commit_callbacks
) -> None:
    client = client_for(alice)
    with django_capture_on_commit_callbacks(execute=True):
        other = services.conversation_create(
            creator_id=alice.pk, title="alice-carol", participant_ids=[str(carol.pk)]
        )
        first = post_message(client, alice_bob, "for bob only", client_id="k-1")
        reused = post_message(client, other, "for carol", client_id="k-1")
    assert first.status_code == 201
    assert reused.status_code == 400
    assert "client_id" in reused.json()
    assert "for bob only" not in reused.content.decode()
    # Nothing was written to carol's conversation, and the retry of the first still answers.
    assert client.get(f"/api/conversations/{other.id}/events").json()["events"] == []
    retry = post_message(client, alice_bob, "for bob only", client_id="k-1")
    assert (retry.status_code, retry.json()) == (200, first.json())
    # Another user's client_id is their own (idempotency never crosses users).
    with django_capture_on_commit_callbacks(execute=True):
        bobs = post_message(client_for(bob), alice_bob, "bob's", client_id="k-1")
    assert bobs.status_code == 201
    assert bobs.json()["id"] != first.json()["id"]


@pytest.mark.parametrize("client_id", ["", 5, "x" * 65, None])
def test_a_bad_client_id_is_a_400(client_for, alice, alice_bob, client_id) -> None:
    response = post_message(client_for(alice), alice_bob, "hi", client_id=client_id)
    assert response.status_code == 400
    assert "client_id" in response.json()
