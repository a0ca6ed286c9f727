"""Users, conversations and authenticated clients for the REST tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from accounts.tokens import token_issue
from chat import services
from chat.models import Conversation


def _user(username: str, *, staff: bool = False) -> Any:
    return get_user_model().objects.create_user(username=username, password=None, is_staff=staff)


@pytest.fixture
def alice(db: None) -> Any:
    return _user("alice")


@pytest.fixture
def bob(db: None) -> Any:
    return _user("bob")


@pytest.fixture
def carol(db: None) -> Any:
    return _user("carol")


@pytest.fixture
def staff(db: None) -> Any:
    return _user("admin", staff=True)


@pytest.fixture
def client_for() -> Callable[[Any], APIClient]:
    """An API client that sends the user's token, as a real client does."""

    def make(user: Any) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_issue(user=user).key}")
        return client

    return make


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def alice_bob(alice: Any, bob: Any, django_capture_on_commit_callbacks: Any) -> Conversation:
    """A conversation of alice and bob (carol is a stranger to it)."""
    with django_capture_on_commit_callbacks(execute=False):
        return services.conversation_create(
            creator_id=alice.pk, title="alice-bob", participant_ids=[str(bob.pk)]
        )


class GroupListener:
    """A channel in a group of the channel layer: what a socket in that group would get."""

    def __init__(self, group: str) -> None:
        self.layer = get_channel_layer()
        assert self.layer is not None
        self.group = group
        self.channel: str = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(group, self.channel)

    def receive(self, timeout: float = 2.0) -> dict[str, Any]:
        import asyncio

        async def _receive() -> dict[str, Any]:
            assert self.layer is not None
            async with asyncio.timeout(timeout):
                return dict(await self.layer.receive(self.channel))

        return async_to_sync(_receive)()

    def close(self) -> None:
        assert self.layer is not None
        async_to_sync(self.layer.group_discard)(self.group, self.channel)


@pytest.fixture
def listen() -> Iterator[Callable[[str], GroupListener]]:
    listeners: list[GroupListener] = []

    def make(group: str) -> GroupListener:
        listener = GroupListener(group)
        listeners.append(listener)
        return listener

    yield make
    for listener in listeners:
        listener.close()
