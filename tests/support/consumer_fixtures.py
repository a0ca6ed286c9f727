"""Fixtures for in-process consumer tests: users, conversations, sockets on the real stack.

Import them into a test module (``from tests.support.consumer_fixtures import *``). Each test
gets a fresh in-memory channel layer, registry and instance loops, and every socket it opened
is disconnected afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from channels.layers import channel_layers
from django.contrib.auth import get_user_model

from accounts.tokens import token_issue
from chat.models import Conversation, Participant
from connections.instance import instance_stop
from connections.registry import reset_registry
from presence.services import presence_settle
from tests.support.consumer import InProcessSocket
from tests.support.demo_user import DemoUser

__all__ = ["Demo", "DemoUser", "demo", "open_socket", "realtime_override", "stack"]


@dataclass(frozen=True)
class Demo:
    users: dict[str, DemoUser]
    conversations: dict[str, str]  # title -> id

    def __getattr__(self, name: str) -> DemoUser:
        try:
            return self.users[name]
        except KeyError:
            raise AttributeError(name) from None


@pytest.fixture
def realtime_override(settings: Any) -> Callable[..., None]:
    """``realtime_override(TYPING_TIMEOUT_SECONDS=0.2)``: change REALTIME knobs for one test."""

    def apply(**values: Any) -> None:
        settings.REALTIME = {**settings.REALTIME, **values}

    return apply


@pytest.fixture
def demo(transactional_db: None) -> Demo:
    """alice, bob, carol share ``ab``/``abc``; dave shares nothing with anyone."""
    user_model = get_user_model()
    users = {}
    for name in ("alice", "bob", "carol", "dave"):
        # No password: hashing one costs ~0.5 s and sockets authenticate by token.
        user = user_model.objects.create_user(username=name, password=None)
        users[name] = DemoUser(name, str(user.pk), token_issue(user=user).key)
    conversations = {}
    for title, members in {"ab": ("alice", "bob"), "abc": ("alice", "bob", "carol")}.items():
        conversation = Conversation.objects.create(title=title)
        for member in members:
            Participant.objects.create(conversation=conversation, user_id=int(users[member].id))
        conversations[title] = str(conversation.id)
    return Demo(users, conversations)


@pytest.fixture
async def stack() -> AsyncIterator[Any]:
    """The real ASGI application, with fresh process-wide state around the test."""
    from realtime_project.asgi import application

    channel_layers.backends = {}
    reset_registry()
    yield application
    # Online writes run after a connect answers; one still reading the database would hold
    # SQLite's table locks while the test database is flushed.
    await presence_settle()
    await instance_stop()
    reset_registry()
    channel_layers.backends = {}


@pytest.fixture
async def open_socket(
    stack: Any, demo: Demo
) -> AsyncIterator[Callable[..., Awaitable[InProcessSocket]]]:
    """``await open_socket(demo.alice)``: a socket on the full stack, closed after the test."""
    opened: list[InProcessSocket] = []

    async def open_(
        user: DemoUser | None,
        *,
        token: str | None = None,
        user_id: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> InProcessSocket:
        socket = await InProcessSocket.open(
            stack,
            token=token if token is not None else (user.token if user else None),
            user_id=user_id,
            headers=headers,
        )
        opened.append(socket)
        return socket

    yield open_
    for socket in opened:
        await socket.disconnect()
