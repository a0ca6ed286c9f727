"""The API token model moved from ``connections`` to ``accounts`` without touching its table.

A database migrated before the move keeps its tokens, and the rights granted on them, after
migrating past it; and the models and migrations agree (``makemigrations --check``).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from accounts.models import AuthToken, token_digest

pytestmark = pytest.mark.django_db(transaction=True)

LAST_BEFORE_THE_MOVE = ("connections", "0002_live_connection_permissions")
BEFORE_THE_MOVE: list[tuple[str, str | None]] = [LAST_BEFORE_THE_MOVE, ("accounts", None)]


def _migrate(targets: list[tuple[str, str | None]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    ContentType.objects.clear_cache()
    return MigrationExecutor(connection)


def _latest() -> list[tuple[str, str]]:
    return list(MigrationExecutor(connection).loader.graph.leaf_nodes())


def test_a_database_from_before_the_move_keeps_its_tokens_and_rights() -> None:
    latest = _latest()
    executor = _migrate(BEFORE_THE_MOVE)
    try:
        state_nodes = [node for node in latest if node[0] not in ("accounts", "connections")] + [
            LAST_BEFORE_THE_MOVE
        ]
        old = executor.loader.project_state(state_nodes).apps
        old_user_model = old.get_model("auth", "User")
        old_token_model = old.get_model("connections", "AuthToken")
        old_permission_model = old.get_model("auth", "Permission")
        holder = old_user_model.objects.create(username="holder")
        admin = old_user_model.objects.create(username="token-admin", is_staff=True)
        old_token_model.objects.create(
            digest=token_digest("kept-key"),
            user_id=holder.pk,
            expires_at=timezone.now() + timedelta(days=1),
        )
        admin.user_permissions.add(
            old_permission_model.objects.get(
                content_type__app_label="connections", codename="delete_authtoken"
            )
        )
    finally:
        _migrate(list(latest))

    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
    assert "connections_authtoken" in tables
    assert "accounts_authtoken" not in tables
    token = AuthToken.objects.get(digest=token_digest("kept-key"))
    assert token.user.username == "holder"
    # The right granted on the token model before the move is still held, by its new name.
    user = get_user_model().objects.get(username="token-admin")
    assert user.has_perm("accounts.delete_authtoken")
    assert not user.has_perm("connections.delete_authtoken")


def test_the_models_need_no_new_migration() -> None:
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
