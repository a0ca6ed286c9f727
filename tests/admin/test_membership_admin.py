"""Membership edited in the admin goes through the services: member events, seqs, authority."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat import services
from chat.models import Event, Participant
from connections.control import user_group
from tests.rest.conftest import GroupListener

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(db: None) -> Client:
    user = get_user_model().objects.create_superuser("root", password=None)
    client = Client()
    client.force_login(user)
    return client


def inline_post(conversation: Any, rows: list[dict[str, str]], initial: int) -> dict[str, str]:
    data = {
        "title": conversation.title,
        "memberships-TOTAL_FORMS": str(len(rows)),
        "memberships-INITIAL_FORMS": str(initial),
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(rows):
        for key, value in row.items():
            data[f"memberships-{index}-{key}"] = value
    return data


def test_removing_and_adding_in_the_admin_emits_member_events(
    admin_client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    users = get_user_model().objects
    alice, bob, carol = (users.create_user(n, password=None) for n in ("alice", "bob", "carol"))
    with django_capture_on_commit_callbacks(execute=False):
        conversation = services.conversation_create(
            creator_id=alice.pk, title="ab", participant_ids=[str(bob.pk)]
        )
    rows = [
        {"id": str(p.pk), "conversation": str(conversation.pk), "user": str(p.user_id)}
        for p in Participant.objects.filter(conversation=conversation).order_by("user_id")
    ]
    rows[1]["DELETE"] = "on"  # bob
    rows.append({"conversation": str(conversation.pk), "user": str(carol.pk)})
    bob_socket = GroupListener(user_group(bob.pk))
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/chat/conversation/{conversation.pk}/change/",
            inline_post(conversation, rows, initial=2),
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    logged = list(Event.objects.filter(conversation=conversation).values_list("seq", "frame"))
    assert [(seq, f["action"], f["user_id"]) for seq, f in logged] == [
        (1, "removed", str(bob.pk)),
        (2, "added", str(carol.pk)),
    ]
    assert bob_socket.receive()["event"]["action"] == "removed"
    assert set(Participant.objects.values_list("user_id", flat=True)) == {alice.pk, carol.pk}
    bob_socket.close()
