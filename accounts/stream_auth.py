"""Authentication of event streams (``GET /api/events/stream``), before the consumer.

A stream is a socket (docs/sse.md), so it is authenticated the way a WebSocket is and with
the same outcome in the scope (``user``, ``auth_close_code``, the token's identity), which
the consumer turns into an HTTP status: ``Authorization: Token <key>`` (what non-browser
clients send), ``?token=`` (``EventSource`` cannot set headers), or the session cookie from
the page's own origin. A connect the event loop's gate cannot answer in time
(``accounts.admission``) is shed with ``503``, ``Retry-After`` and ``X-Retry-After-Ms``
before any of that, as a WebSocket handshake is with ``1013``.
"""

from __future__ import annotations

import json
import random
from typing import Any
from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack
from django.contrib.auth.models import AnonymousUser

from accounts.admission import connect_gate
from accounts.auth import (
    CONNECT_TICKET_KEY,
    TicketRelease,
    cookie_origin_allowed,
    has_session_cookie,
    session_identity,
    user_for_token,
)
from accounts.authority import SCOPE_KEY, SESSION_SCOPE_KEY
from accounts.tokens import TokenIdentity
from connections import metrics
from realtime_project.close_codes import WS_1013_TRY_AGAIN_LATER, WS_4401_UNAUTHORIZED
from realtime_project.runtime.asgi_types import ASGIApp, Receive, Scope, Send

# A shed or draining client waits this long, jittered, before it tries again.
RETRY_AFTER_SECONDS = (1, 5)


def retry_after() -> bytes:
    return str(random.randint(*RETRY_AFTER_SECONDS)).encode()


def stream_token(scope: Scope) -> str | None:
    """The token a stream request carries: the ``Authorization`` header first, then
    ``?token=``; ``None`` when it carries neither (the session decides)."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            scheme, _, key = bytes(value).decode("latin-1").strip().partition(" ")
            return key.strip() if scheme.lower() == "token" else ""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


async def http_reply(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A whole JSON error answer (``{"detail"}``, as REST's)."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _ScopeVerdict:
    """Sets ``auth_close_code`` from the user the session middleware found."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            scope["user"] = AnonymousUser()
            scope["auth_close_code"] = WS_4401_UNAUTHORIZED
            scope[SESSION_SCOPE_KEY] = None
        else:
            scope["auth_close_code"] = None
            # A stream opened with a session ends with it, as a WebSocket does.
            scope[SESSION_SCOPE_KEY] = session_identity(scope, user)
        scope[SCOPE_KEY] = None
        await self.inner(scope, receive, send)


class StreamAuthMiddleware:
    """Shedding, then the token (header or query) or the session; see the module docstring."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner
        self.with_session = AuthMiddlewareStack(_ScopeVerdict(inner))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = connect_gate()
        ticket = gate.enter()
        if ticket is None:
            # The same gate and hint as a WebSocket's 1013 (docs/protocol.md).
            hint_ms = gate.retry_after_ms()
            metrics.connection_rejected(WS_1013_TRY_AGAIN_LATER)
            await http_reply(
                send,
                503,
                "Too many connects in progress; retry later.",
                [
                    (b"retry-after", str(max(1, -(-hint_ms // 1000))).encode()),
                    (b"x-retry-after-ms", str(hint_ms).encode()),
                ],
            )
            return
        # The ticket is given back when the stream answers (accepted or refused) or the
        # client leaves first.
        pass_ = TicketRelease(gate, ticket, receive, send)
        scope = dict(scope)
        scope[CONNECT_TICKET_KEY] = pass_
        await self._authenticated(scope, pass_.receive, pass_.send)

    async def _authenticated(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        token = stream_token(scope)
        if token is None:
            if has_session_cookie(scope) and not cookie_origin_allowed(scope):
                metrics.connection_rejected(403)
                await http_reply(send, 403, "Cross-origin stream refused.")
                return
            await self.with_session(scope, receive, send)
            return
        user: Any = None
        identity: TokenIdentity | None = None
        if token:
            user, identity = await user_for_token(token)
        if user is None or not user.is_authenticated or not user.is_active:
            scope["user"] = AnonymousUser()
            scope["auth_close_code"] = WS_4401_UNAUTHORIZED
            identity = None
        else:
            scope["user"] = user
            scope["auth_close_code"] = None
        scope[SCOPE_KEY] = identity
        await self.inner(scope, receive, send)
