"""What an idle socket keeps: the coroutines suspended under it, and nothing it no longer needs.

Channels' own stack kept ten coroutines and two tasks alive under every idle socket (the
proxy middleware, both routers, the origin validator, as_asgi's wrapper, the consumer,
``await_many_dispatch`` and ``asyncio.wait``; docs/benchmarks.md): each a few hundred bytes.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import pytest
from channels.routing import ProtocolTypeRouter
from django.db.models import Model
from django.urls import re_path

from accounts.auth import TicketRelease, websocket_stack
from chat.consumers import ChatConsumer
from realtime_project.runtime.routing import URLRouter
from tests.support.async_poll import async_wait_until
from tests.support.consumer import InProcessSocket
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.consumer_fixtures import Demo

pytestmark = pytest.mark.django_db(transaction=True)


def _awaiting(task: Any) -> list[str]:
    """The coroutines ``task`` is suspended in, outermost first."""
    names: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and hasattr(coro, "cr_code"):
        names.append(coro.cr_code.co_qualname)
        coro = coro.cr_await
    return names


async def test_an_idle_socket_waits_in_its_consumer_only(open_socket, demo: Demo) -> None:
    socket = await open_socket(demo.alice)
    assert (await socket.recv())["type"] == "connected"
    task = socket.communicator.future
    assert isinstance(task, asyncio.Task)

    def idle() -> list[str] | None:
        chain = _awaiting(task)
        return chain if chain[-1:] == ["LeanDispatchMixin.__call__"] else None

    chain = await async_wait_until(idle, what="the socket to sit idle")
    assert chain == [
        "ProtocolTypeRouter.__call__",  # kept for the connect gate (realtime_project/asgi.py)
        "WebSocketAuthMiddleware.__call__",
        "LeanDispatchMixin.__call__",
    ]


def _passes() -> set[int]:
    gc.collect()
    return {id(o) for o in gc.get_objects() if isinstance(o, TicketRelease)}


async def test_an_idle_socket_keeps_nothing_of_the_connect_gate(open_socket, demo: Demo) -> None:
    # (Communicators of earlier tests may still hold their scopes, and a pass-through in them.)
    before = _passes()
    socket = await open_socket(demo.alice)
    assert (await socket.recv())["type"] == "connected"
    assert (await socket.request({"type": "ping"}))["type"] == "pong"
    # The gate's pass-through has done its work once the connect was answered.
    assert _passes() - before == set()
    assert (await socket.request({"type": "ping"}))["type"] == "pong"  # still served


async def test_a_token_socket_keeps_its_users_id_not_the_row(open_socket, demo: Demo) -> None:
    sockets = [await open_socket(demo.alice) for _ in range(2)]  # a database read, a cache hit
    for socket in sockets:
        connected = await socket.recv()
        assert connected["type"] == "connected" and connected["user_id"] == demo.alice.id
        user = socket.communicator.scope["user"]
        assert not isinstance(user, Model)
        assert str(user.pk) == demo.alice.id
        assert user.is_authenticated and user.is_active and not user.is_anonymous


async def _consumers_opened(demo: Demo, users: list[Any]) -> list[ChatConsumer]:
    """Open a socket for each of ``users`` at once, on consumers of a class made for this call
    (its shared table of attribute names starts empty), and return the consumers."""

    class FreshChatConsumer(ChatConsumer):
        pass

    route = re_path(r"^ws/?$", FreshChatConsumer.as_asgi())
    app: Any = ProtocolTypeRouter({"websocket": websocket_stack(URLRouter([route]))})
    sockets = await asyncio.gather(*(InProcessSocket.open(app, token=u.token) for u in users))
    try:
        for socket in sockets:
            assert (await socket.recv())["type"] == "connected"
        gc.collect()
        return [o for o in gc.get_objects() if isinstance(o, FreshChatConsumer)]
    finally:
        for socket in sockets:
            await socket.disconnect()


async def test_a_burst_of_connects_costs_each_consumer_no_dict_of_its_own(
    stack: Any, demo: Demo
) -> None:
    # Daphne makes a consumer per handshake; under a burst, dozens exist before the first
    # reaches its connect. CPython 3.11 gives a class's shared table of attribute names a
    # slot less with every instance made: a name first set at connect then no longer fits,
    # and each consumer keeps its attributes in a dict of its own (832 B against 296 B at most
    # here, as ``sys.getsizeof`` of the ``__dict__`` it makes on reading).
    [alone] = await _consumers_opened(demo, [demo.alice])
    expected = sys.getsizeof(alone.__dict__)
    burst = await _consumers_opened(demo, [demo.alice, demo.bob, demo.carol] * 14)
    assert len(burst) == 42
    assert max(sys.getsizeof(c.__dict__) for c in burst) <= expected
