"""A connect cut short after it registered (Daphne kills an application that outlived its
client) leaves nothing behind: no disconnect handler runs for it, so the connect undoes
itself."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from chat import selectors
from connections.registry import get_registry
from tests.support.async_poll import async_wait_until
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.consumer_fixtures import Demo
from tests.support.frames import auth_query

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_connect_killed_after_registering_leaves_no_socket_behind(
    stack: Any, demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    reached = asyncio.Event()

    async def stuck(**kwargs: Any) -> dict[str, int]:
        reached.set()
        await asyncio.Event().wait()  # the database never answers
        return {}

    monkeypatch.setattr(selectors, "conversation_positions_for_user_async", stuck)
    communicator = WebsocketCommunicator(stack, "/ws/" + auth_query(token=demo.alice.token))
    await communicator.send_input({"type": "websocket.connect"})
    async with asyncio.timeout(5):
        await reached.wait()
    registry = get_registry()
    assert await registry.user_connection_count(demo.alice.id) == 1

    communicator.future.cancel()  # what Daphne's application checker does
    await async_wait_until(
        lambda: registry.local_connection_count() == 0, what="the cut connect undone"
    )
    assert await registry.user_connection_count(demo.alice.id) == 0
