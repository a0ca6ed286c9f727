"""The connect's reads compiled once (realtime_project.database.CompiledRows) read what the ORM
reads, for every user, and a query shape it cannot bind is compiled each time instead."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async

from chat import selectors
from chat.models import Participant
from realtime_project.database import CompiledRows, database_async_enabled
from tests.support.consumer_fixtures import *  # noqa: F403

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def async_path() -> None:
    if not database_async_enabled():
        pytest.skip("the async database path runs on PostgreSQL (DATABASE_URL)")


async def test_every_users_positions_and_presence_audience_match_the_orm(
    demo: Any, async_path: None
) -> None:
    for name in ("alice", "bob", "carol", "dave", "alice"):
        user_id = demo.users[name].id
        expected_positions = await database_sync_to_async(
            selectors.conversation_positions_for_user
        )(user_id=user_id)
        expected_ids = await database_sync_to_async(selectors.presence_conversation_ids)(
            user_id=user_id
        )
        assert (
            await selectors.conversation_positions_for_user_async(user_id=user_id)
            == expected_positions
        )
        assert sorted(await selectors.presence_conversation_ids_async(user_id=user_id)) == sorted(
            expected_ids
        )
    # bob takes part in two conversations, dave in none: the reads told them apart.
    assert len(await selectors.conversation_positions_for_user_async(user_id=demo.bob.id)) == 2
    assert await selectors.conversation_positions_for_user_async(user_id=demo.dave.id) == {}


async def test_a_shape_with_more_than_the_one_value_is_compiled_for_each_call(
    demo: Any, async_path: None
) -> None:
    # Two parameters where CompiledRows binds one: keeping the first call's SQL would bind
    # the wrong values (or too few) on the second.
    def build(conversation_id: str) -> Any:
        return Participant.objects.filter(
            conversation_id=conversation_id, user_id__gte=0
        ).values_list("user_id")

    rows = CompiledRows(build, prepare=str)
    by_title = {}
    for title in ("ab", "abc", "ab"):
        found = await rows.rows(demo.conversations[title])
        by_title[title] = sorted(str(user_id) for (user_id,) in found)
    assert by_title == {
        "ab": sorted([demo.alice.id, demo.bob.id]),
        "abc": sorted([demo.alice.id, demo.bob.id, demo.carol.id]),
    }
