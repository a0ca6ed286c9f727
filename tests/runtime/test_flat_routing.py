"""The URL router leaves no coroutine of its own under a socket
(``realtime_project.runtime.routing``), and still routes and fails as Channels' does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.urls import re_path

from realtime_project.runtime.routing import URLRouter


async def _scope_of(scope: dict[str, Any], receive: Any, send: Any) -> dict[str, Any]:
    return scope


# Typed as a view for ``re_path``, which the router takes ASGI applications in.
_app: Any = _scope_of


async def test_routes_by_path_and_returns_the_route_coroutine() -> None:
    router = URLRouter([re_path(r"^ws/(?P<room>\w+)/?$", _app)])
    awaitable = router({"type": "websocket", "path": "/ws/lobby/"}, None, None)
    assert asyncio.iscoroutine(awaitable)
    assert getattr(awaitable, "cr_code", None) is _scope_of.__code__
    scope = await awaitable
    assert scope["url_route"] == {"args": (), "kwargs": {"room": "lobby"}}
    assert scope["path_remaining"] == ""


async def test_an_unknown_path_fails_when_awaited_as_with_channels() -> None:
    router = URLRouter([re_path(r"^ws/?$", _app)])
    unknown_path = router({"type": "websocket", "path": "/nowhere"}, None, None)
    with pytest.raises(ValueError, match="No route found"):
        await unknown_path
