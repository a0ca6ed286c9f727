"""A router that keeps nothing of its own alive under a connection.

Channels' ``URLRouter`` (like any middleware written as an ``async def`` that awaits the next
one) leaves a suspended coroutine for as long as the connection lives, and a copy of the
scope too: a few hundred bytes each per idle socket (``bench.e2e.socket_memory``,
docs/benchmarks.md). This one picks the inner application the same way and returns its
coroutine instead of awaiting it. (Channels' ``ProtocolTypeRouter`` stays at the top of the
application, a coroutine: see ``realtime_project/asgi.py``.) An error is still raised when
the returned awaitable is awaited, as from Channels' routers, so a server sees it in the
application's task, where it expects it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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
