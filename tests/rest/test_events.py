"""A REST call emits the same event its WebSocket twin would, to every socket of the audience.

Sockets are stood in for by channels in the groups the consumer joins (``conv.<id>``); a
REST call has no socket of origin, so nothing is excluded.
"""

from __future__ import annotations

from chat.events import conversation_group
from chat.layer_messages import EVENT_MESSAGE_TYPE


def test_rest_message_reaches_the_conversation_group(
    client_for, bob, alice_bob, listen, django_capture_on_commit_callbacks
) -> None:
    listener = listen(conversation_group(alice_bob.id))
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(bob).post(
            f"/api/conversations/{alice_bob.id}/messages", {"body": "hi"}, format="json"
        )
    assert response.status_code == 201
    received = listener.receive()
    assert received["type"] == EVENT_MESSAGE_TYPE
    assert received["exclude_channel"] is None
    event = received["event"]
    assert event["type"] == "message"
    assert event["conversation_id"] == str(alice_bob.id)
    assert event["message"] == response.json()
    assert event["event_id"] and event["ts"]


def test_rest_typing_reaches_the_conversation_group(
    client_for, alice, alice_bob, listen, django_capture_on_commit_callbacks
) -> None:
    listener = listen(conversation_group(alice_bob.id))
    with django_capture_on_commit_callbacks(execute=True):
        client_for(alice).post(
            f"/api/conversations/{alice_bob.id}/typing", {"is_typing": False}, format="json"
        )
    event = listener.receive()["event"]
    assert event["type"] == "typing"
    assert event["user_id"] == str(alice.pk)
    assert event["is_typing"] is False


def test_rest_read_reaches_the_conversation_group(
    client_for, alice, bob, alice_bob, listen, django_capture_on_commit_callbacks
) -> None:
    message = (
        client_for(alice)
        .post(f"/api/conversations/{alice_bob.id}/messages", {"body": "x"}, format="json")
        .json()
    )
    listener = listen(conversation_group(alice_bob.id))
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(bob).post(
            "/api/messages/read",
            {"conversation_id": str(alice_bob.id), "message_ids": [message["id"]]},
            format="json",
        )
    event = listener.receive()["event"]
    assert event["type"] == "read"
    assert event["user_id"] == str(bob.pk)
    assert event["message_ids"] == [message["id"]]
    assert event["read_at"] == response.json()["read_at"]


def test_a_refused_call_emits_nothing(
    client_for, carol, alice_bob, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        client_for(carol).post(
            f"/api/conversations/{alice_bob.id}/messages", {"body": "hi"}, format="json"
        )
        client_for(carol).post(
            f"/api/conversations/{alice_bob.id}/typing", {"is_typing": True}, format="json"
        )
    assert callbacks == []
