"""``manage.py seed_demo --json`` creates the demo data once and prints only JSON."""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.management import call_command

from accounts.tokens import token_lookup
from chat.models import Conversation

pytestmark = pytest.mark.django_db


def _seed() -> dict:
    out = io.StringIO()
    call_command("seed_demo", "--json", stdout=out)
    return json.loads(out.getvalue())


def test_prints_users_and_conversations() -> None:
    data = _seed()
    assert set(data) == {"users", "conversations"}
    assert set(data["users"]) == {"alice", "bob", "carol", "admin"}
    for name, info in data["users"].items():
        user = User.objects.get(username=name)
        assert info["id"] == str(user.pk)
        found = token_lookup(info["token"])
        assert found is not None and found.user == user
        assert authenticate(username=name, password="demo-password") == user
    assert User.objects.get(username="admin").is_staff
    assert not User.objects.get(username="alice").is_staff
    ids = {name: info["id"] for name, info in data["users"].items()}
    assert data["conversations"]["alice-bob"]["participant_ids"] == sorted(
        [ids["alice"], ids["bob"]]
    )
    assert data["conversations"]["alice-bob-carol"]["participant_ids"] == sorted(
        [ids["alice"], ids["bob"], ids["carol"]]
    )


def test_is_idempotent() -> None:
    first = _seed()
    second = _seed()
    # Only token digests are stored, so each run hands out a fresh (equally valid) token.
    assert first["conversations"] == second["conversations"]
    assert {n: u["id"] for n, u in first["users"].items()} == {
        n: u["id"] for n, u in second["users"].items()
    }
    assert all(
        token_lookup(u["token"]) for u in [*first["users"].values(), *second["users"].values()]
    )
    assert Conversation.objects.count() == 2
    assert User.objects.count() == 4
