"""The client's address behind the load balancer, believed only from trusted proxies.

See docs/deploy.md. HAProxy appends the address it accepted the connection from to
``X-Forwarded-For`` (``option forwardfor``); a client can send its own ``X-Forwarded-For``
too, and HAProxy passes it on in front of its own. So the header is read from the right:
the first address that is not one of ``TRUSTED_PROXIES`` is the client. A request that does
not come from a trusted proxy keeps its TCP peer as its address, whatever headers it sends.
This replaces Daphne's ``--proxy-headers``, which believes the left-most address from anyone
(``realtime_project.runtime.daphne`` turns that option off). Uvicorn's
``ProxyHeadersMiddleware`` works the same way.

The address lands in ``scope["client"]``: what the registry, the admin page, the logs and
the throttles see.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Awaitable, Iterable

from realtime_project.conf import realtime_settings
from realtime_project.runtime.asgi_types import ASGIApp, Receive, Scope, Send
from realtime_project.runtime.routing import asgi_single_callable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def _networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def _trusted(host: str, networks: Iterable[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # not an IP (a Unix socket path, a garbage header entry)
        return False
    return any(address in network for network in networks)


def _header(scope: Scope, name: bytes) -> list[str]:
    return [
        value.decode("latin-1") for key, value in scope.get("headers") or [] if key.lower() == name
    ]


def forwarded_client(scope: Scope) -> tuple[str | None, str | None]:
    """``(client address, scheme)`` the trusted proxy vouches for; ``(None, None)`` if none."""
    peer = scope.get("client")
    networks = _networks(tuple(realtime_settings.TRUSTED_PROXIES))
    if not peer or not _trusted(str(peer[0]), networks):
        return None, None
    hops = [hop.strip() for line in _header(scope, b"x-forwarded-for") for hop in line.split(",")]
    hops = [hop for hop in hops if hop]
    client: str | None = None
    for hop in reversed(hops):
        client = hop
        if not _trusted(hop, networks):
            break
    protos = _header(scope, b"x-forwarded-proto")
    scheme = protos[-1].split(",")[-1].strip().lower() if protos else None
    return client, scheme if scheme in {"http", "https"} else None


def proxy_headers(app: ASGIApp) -> ASGIApp:
    """``app`` seeing the real client in ``scope["client"]`` (and ``scheme``) behind a proxy."""

    # A plain function returning the inner coroutine: no frame of ours stays suspended for a
    # socket's whole life (realtime_project.runtime.routing). Marked, since it is the
    # outermost application, which servers ask whether it is an ASGI 3 one.
    @asgi_single_callable
    def middleware(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] in {"http", "websocket"}:
            client, scheme = forwarded_client(scope)
            if client is not None or scheme is not None:
                scope = dict(scope)
                if client is not None:
                    scope["client"] = (client, 0)
                if scheme is not None:
                    secure = scheme == "https"
                    if scope["type"] == "websocket":
                        scope["scheme"] = "wss" if secure else "ws"
                    else:
                        scope["scheme"] = scheme
        return app(scope, receive, send)

    return middleware
