"""Create the demo users and conversations, idempotently.

``--json`` prints only ``{"users": {name: {"id", "token"}}, "conversations": {title: {"id",
"participant_ids"}}}`` so scripts and acceptance tests can read it.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from accounts.tokens import token_issue
from chat.models import Conversation, Participant

DEMO_PASSWORD = "demo-password"
DEMO_USERS = ("alice", "bob", "carol")
STAFF_USER = "admin"
DEMO_CONVERSATIONS = {
    "alice-bob": ("alice", "bob"),
    "alice-bob-carol": ("alice", "bob", "carol"),
}


class Command(BaseCommand):
    help = "Create demo users alice, bob, carol, staff user admin, and two conversations."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print only the created ids")

    def handle(self, *args: Any, **options: Any) -> None:
        result = seed_demo()
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            for name, info in result["users"].items():
                self.stdout.write(f"user {name}: id={info['id']} token={info['token']}")
            for title, conv in result["conversations"].items():
                self.stdout.write(f"conversation {title}: id={conv['id']}")
            self.stdout.write(f"password for every demo user: {DEMO_PASSWORD}")


@transaction.atomic
def seed_demo() -> dict[str, Any]:
    user_model = get_user_model()
    users: dict[str, Any] = {}
    for name in (*DEMO_USERS, STAFF_USER):
        user, _ = user_model.objects.get_or_create(username=name)
        is_staff = name == STAFF_USER
        user.is_staff = is_staff
        user.is_superuser = is_staff
        user.is_active = True
        # A new password revokes every token the user had (docs/auth.md): set it only when it
        # is not the demo password already, so a second run leaves earlier tokens valid.
        if not user.check_password(DEMO_PASSWORD):
            user.set_password(DEMO_PASSWORD)
        user.save()
        users[name] = user
    conversations: dict[str, dict[str, Any]] = {}
    for title, members in DEMO_CONVERSATIONS.items():
        conversation = Conversation.objects.filter(title=title).order_by("created_at").first()
        if conversation is None:
            conversation = Conversation.objects.create(title=title, created_by=users[members[0]])
        for member in members:
            Participant.objects.get_or_create(conversation=conversation, user=users[member])
        participant_ids = sorted(
            str(pk)
            for pk in Participant.objects.filter(conversation=conversation).values_list(
                "user_id", flat=True
            )
        )
        conversations[title] = {"id": str(conversation.id), "participant_ids": participant_ids}
    return {
        "users": {
            # A fresh token each run; earlier ones stay valid until they expire.
            name: {"id": str(user.pk), "token": token_issue(user=user).key}
            for name, user in users.items()
        },
        "conversations": conversations,
    }
