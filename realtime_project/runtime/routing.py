"""Routers that keep nothing of their own alive under a connection.

Channels' ``ProtocolTypeRouter`` and ``URLRouter`` (like any middleware written as an
``async def`` that awaits the next one) each leave a suspended coroutine for as long as the
connection lives, and ``URLRouter`` a copy of the scope too: a few hundred bytes each per idle
socket (``bench.e2e.socket_memory``, docs/benchmarks.md). These pick the inner application
the same way and return its coroutine instead of awaiting it. An error is still raised when
the returned awaitable is awaited, as from Channels' routers, so a server sees it in the
application's task, where it expects it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from channels.routing import URLRouter as ChannelsURLRouter
from django.urls.exceptions import Resolver404

Scope = dict[str, Any]
Application = Callable[..., Awaitable[Any]]
_App = TypeVar("_App")


def asgi_single_callable(app: _App) -> _App:
    """Mark ``app`` as an ASGI 3 application: asgiref takes a callable that is not an
    ``async def`` for an ASGI 2 one unless told (servers ask before the first call)."""
    app._asgi_single_callable = True  # type: ignore[attr-defined]
    return app


async def raise_later(error: Exception) -> None:
    """An awaitable that raises ``error``: what a plain router returns where Channels' own
    would raise from its coroutine."""
    raise error


class ProtocolTypeRouter:
    """Channels' ``ProtocolTypeRouter``: the application for the scope's ``type``."""

    _asgi_single_callable = True

    def __init__(self, application_mapping: Mapping[str, Application]) -> None:
        self.application_mapping = application_mapping

    def __call__(self, scope: Scope, receive: Any, send: Any) -> Awaitable[Any]:
        application = self.application_mapping.get(scope["type"])
        if application is None:
            return raise_later(
                ValueError(f"No application configured for scope type {scope['type']!r}")
            )
        return application(scope, receive, send)


class URLRouter(ChannelsURLRouter):  # type: ignore[misc]
    """Channels' ``URLRouter`` (routes as ``path()``/``re_path()``), writing ``path_remaining``
    and ``url_route`` into the scope instead of a copy of it: the server builds a scope per
    connection, and nothing above a router reads it afterwards. A nested router's 404 ends the
    route search instead of trying the next route (this project nests none)."""

    _asgi_single_callable = True

    def __call__(self, scope: Scope, receive: Any, send: Any) -> Awaitable[Any]:
        path = scope.get("path_remaining", scope.get("path", None))
        if path is None:
            return raise_later(ValueError("No 'path' key in connection scope, cannot route URLs"))
        if "path_remaining" not in scope:
            root_path = scope.get("root_path", "")
            if root_path and not path.startswith(root_path):
                return raise_later(ValueError(f"No route found for path {path!r}."))
            path = path[len(root_path) :]
        path = path.lstrip("/")
        for route in self.routes:
            match = route.pattern.match(path)
            if not match:
                continue
            new_path, args, kwargs = match
            kwargs.update(route.default_args)
            outer = scope.get("url_route", {})
            scope["path_remaining"] = new_path
            scope["url_route"] = {
                "args": outer.get("args", ()) + args,
                "kwargs": {**outer.get("kwargs", {}), **kwargs},
            }
            application: Application = route.callback
            return application(scope, receive, send)
        if "path_remaining" in scope:
            return raise_later(Resolver404(f"No route found for path {path!r}."))
        return raise_later(ValueError(f"No route found for path {path!r}."))
