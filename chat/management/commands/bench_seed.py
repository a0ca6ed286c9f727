"""Create many users with tokens and conversations of a given size, for load tests.

Hidden helper of the end-to-end benchmark (docs/benchmarks.md, ``bench/e2e/``): ``bench_seed
--users N --size K --json`` creates users ``<prefix>0 .. <prefix>N-1`` (no usable password:
hashing thousands of them would take minutes), a token each, and conversations of K
consecutive users, then prints only
``{"users": [{"id", "token"}], "conversations": [{"id", "participant_ids"}]}``.
Users are created with bulk inserts, so thousands take about a second on SQLite.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.tokens import tokens_issue_bulk
from chat.models import Conversation, Participant


class Command(BaseCommand):
    help = "Create N users with tokens and conversations of K users each (load tests)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, required=True, help="how many users")
        parser.add_argument("--size", type=int, default=2, help="users per conversation")
        parser.add_argument("--prefix", default="bench", help="username prefix")
        parser.add_argument("--json", action="store_true", help="print only the created ids")

    def handle(self, *args: Any, **options: Any) -> None:
        users, size = int(options["users"]), int(options["size"])
        if users < 1 or size < 1:
            raise CommandError("--users and --size must be at least 1")
        result = bench_seed(users=users, size=size, prefix=str(options["prefix"]))
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write(
                f"{len(result['users'])} users, {len(result['conversations'])} conversations"
            )


@transaction.atomic
def bench_seed(*, users: int, size: int, prefix: str = "bench") -> dict[str, Any]:
    user_model = get_user_model()
    names = [f"{prefix}{index}" for index in range(users)]
    existing = set(user_model.objects.filter(username__in=names).values_list("username", flat=True))
    unusable = make_password(None)
    user_model.objects.bulk_create(
        [user_model(username=name, password=unusable) for name in names if name not in existing]
    )
    by_name = dict(user_model.objects.filter(username__in=names).values_list("username", "pk"))
    ids = [by_name[name] for name in names]
    # Only digests are stored, so every run hands out fresh tokens.
    tokens = tokens_issue_bulk(user_ids=ids)

    groups = [ids[start : start + size] for start in range(0, users, size)]
    conversations = [
        Conversation(title=f"{prefix}-{index}", created_by_id=group[0])
        for index, group in enumerate(groups)
    ]
    Conversation.objects.bulk_create(conversations)
    Participant.objects.bulk_create(
        [
            Participant(conversation=conversation, user_id=pk)
            for conversation, group in zip(conversations, groups, strict=True)
            for pk in group
        ]
    )
    return {
        "users": [{"id": str(pk), "token": tokens[pk]} for pk in ids],
        "conversations": [
            {"id": str(conversation.pk), "participant_ids": [str(pk) for pk in group]}
            for conversation, group in zip(conversations, groups, strict=True)
        ],
    }
