"""Membership by REST: who may add and remove, the caps, and the ``member`` events."""

from __future__ import annotations

import pytest

from chat.event_types import event_check
from chat.events import conversation_group
from connections.control import user_group

pytestmark = pytest.mark.django_db


def add(client, conversation, *user_ids):
    return client.post(
        f"/api/conversations/{conversation.id}/participants",
        {"user_ids": [str(u) for u in user_ids]},
        format="json",
    )


def remove(client, conversation, user_id):
    return client.delete(f"/api/conversations/{conversation.id}/participants/{user_id}")


def test_a_participant_adds_a_user_who_then_sees_the_conversation(
    client_for, alice, bob, carol, alice_bob, listen, django_capture_on_commit_callbacks
) -> None:
    conversation_listener = listen(conversation_group(alice_bob.id))
    carol_listener = listen(user_group(carol.pk))
    with django_capture_on_commit_callbacks(execute=True):
        response = add(client_for(bob), alice_bob, carol.pk)
    assert response.status_code == 200
    body = response.json()
    assert body["participant_ids"] == sorted([str(alice.pk), str(bob.pk), str(carol.pk)], key=int)
    assert {"id": str(carol.pk), "username": "carol"} in body["participants"]
    assert body["last_seq"] == 1
    for listener in (conversation_listener, carol_listener):
        event = listener.receive()["event"]
        event_check(event)
        assert event["type"] == "member"
        assert (event["user_id"], event["action"], event["by"], event["seq"]) == (
            str(carol.pk),
            "added",
            str(bob.pk),
            1,
        )
    assert client_for(carol).get(f"/api/conversations/{alice_bob.id}").status_code == 200
    # Adding someone already there changes nothing.
    again = add(client_for(bob), alice_bob, carol.pk)
    assert again.status_code == 200
    assert again.json()["last_seq"] == 1


def test_unknown_ids_are_refused_without_saying_which(client_for, bob, alice_bob) -> None:
    response = add(client_for(bob), alice_bob, 999, 998)
    assert response.status_code == 400
    assert "999" not in response.content.decode()
    created = client_for(bob).post(
        "/api/conversations", {"title": "t", "participant_ids": ["999"]}, format="json"
    )
    assert created.status_code == 400
    assert "999" not in created.content.decode()


def test_strangers_cannot_add(client_for, carol, alice_bob, anon) -> None:
    assert add(client_for(carol), alice_bob, carol.pk).status_code == 403
    assert add(anon, alice_bob, carol.pk).status_code == 401


@pytest.mark.parametrize(
    "body", [{}, {"user_ids": []}, {"user_ids": "2"}, {"user_ids": [2], "x": 1}]
)
def test_a_bad_body_is_a_400(client_for, bob, alice_bob, body) -> None:
    response = client_for(bob).post(
        f"/api/conversations/{alice_bob.id}/participants", body, format="json"
    )
    assert response.status_code == 400


def test_the_participant_cap_holds(client_for, alice, bob, carol, alice_bob, settings) -> None:
    settings.REALTIME = {**settings.REALTIME, "CONVERSATION_MAX_PARTICIPANTS": 2}
    response = add(client_for(alice), alice_bob, carol.pk)
    assert response.status_code == 400
    assert "at most 2" in response.content.decode()


def test_the_per_user_conversation_cap_holds(client_for, alice, bob, carol, settings) -> None:
    settings.REALTIME = {**settings.REALTIME, "USER_MAX_CONVERSATIONS": 1}
    client = client_for(alice)
    first = client.post(
        "/api/conversations", {"title": "1", "participant_ids": [str(carol.pk)]}, format="json"
    )
    assert first.status_code == 201
    second = client_for(bob).post(
        "/api/conversations", {"title": "2", "participant_ids": [str(carol.pk)]}, format="json"
    )
    assert second.status_code == 400
    assert "at most 1 conversations" in second.content.decode()


def test_a_user_leaves_and_the_creator_removes(
    client_for, alice, bob, carol, alice_bob, listen, django_capture_on_commit_callbacks
) -> None:
    add(client_for(alice), alice_bob, carol.pk)
    bob_listener = listen(user_group(bob.pk))
    with django_capture_on_commit_callbacks(execute=True):
        assert remove(client_for(bob), alice_bob, bob.pk).status_code == 204
    event = bob_listener.receive()["event"]
    assert (event["type"], event["action"], event["user_id"], event["by"]) == (
        "member",
        "removed",
        str(bob.pk),
        str(bob.pk),
    )
    assert client_for(bob).get(f"/api/conversations/{alice_bob.id}").status_code == 403
    # Carol is no creator: she cannot remove alice; alice (the creator) removes carol.
    assert remove(client_for(carol), alice_bob, alice.pk).status_code == 403
    assert remove(client_for(alice), alice_bob, carol.pk).status_code == 204
    assert remove(client_for(alice), alice_bob, carol.pk).status_code == 404
    assert remove(client_for(alice), alice_bob, "nobody").status_code == 404
    events = client_for(alice).get(f"/api/conversations/{alice_bob.id}/events").json()
    assert [(e["seq"], e["action"]) for e in events["events"]] == [
        (1, "added"),
        (2, "removed"),
        (3, "removed"),
    ]


def not_carol(*, adder_id: str, user_ids: set[str]) -> set[str]:
    """A ``PARTICIPANT_ADD_POLICY``: nobody may put carol anywhere."""
    from django.contrib.auth import get_user_model

    carols = {
        str(pk)
        for pk in get_user_model().objects.filter(username="carol").values_list("pk", flat=True)
    }
    return user_ids - carols


def test_an_add_policy_refuses_as_unknown_ids_are_refused(
    client_for, alice, bob, carol, alice_bob, settings
) -> None:
    settings.REALTIME = {
        **settings.REALTIME,
        "PARTICIPANT_ADD_POLICY": "tests.rest.test_membership.not_carol",
    }
    client = client_for(bob)
    unknown = add(client, alice_bob, 999)
    refused = add(client, alice_bob, carol.pk)
    assert refused.status_code == unknown.status_code == 400
    # The same body: a refusal does not confirm that carol exists, nor reveal her name.
    assert refused.json() == unknown.json()
    assert "carol" not in refused.content.decode()
    created = client.post(
        "/api/conversations", {"title": "t", "participant_ids": [str(carol.pk)]}, format="json"
    )
    assert (created.status_code, created.json()) == (
        400,
        {"participant_ids": unknown.json()["user_ids"]},
    )
    # Everyone else is added as before.
    assert (
        client.post(
            "/api/conversations", {"title": "t", "participant_ids": [str(alice.pk)]}, format="json"
        ).status_code
        == 201
    )
