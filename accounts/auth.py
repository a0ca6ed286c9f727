"""WebSocket authentication and origin checks, applied in ``realtime_project/asgi.py``.

Browsers cannot set headers on a WebSocket, so the token travels as ``?token=``; a Django
session cookie works too. A failed check does not refuse the handshake: the consumer accepts
and closes with 4401/4403 so that clients can tell "bad credentials" from "server down"
(a refused handshake only shows up as a generic 403 or 1006 in browsers).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from http.cookies import CookieError, SimpleCookie
from typing import Any, Final, cast
from urllib.parse import parse_qs, urlparse, urlsplit

from channels.auth import AuthMiddlewareStack
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from accounts.admission import ConnectGate, connect_gate, retry_reason
from accounts.authority import SCOPE_KEY, SESSION_SCOPE_KEY
from accounts.models import token_digest
from accounts.sessions import SessionIdentity, session_digest
from accounts.token_cache import CachedToken, TokenUser, token_cache
from accounts.tokens import TokenIdentity, token_lookup_async
from connections import metrics
from realtime_project.close_codes import (
    WS_1013_TRY_AGAIN_LATER,
    WS_4401_UNAUTHORIZED,
    WS_4403_FORBIDDEN,
)
from realtime_project.runtime.asgi_types import PASS_THROUGH_KEY, Receive, Send
from realtime_project.runtime.routing import raise_later

ASGIApp = Any


def _query_param(scope: dict[str, Any], name: str) -> str | None:
    params = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = params.get(name)
    return values[0] if values else None


async def _user_for_token(key: str) -> tuple[TokenUser | None, TokenIdentity | None]:
    """The token's user (a ``TokenUser``, not the row) and identity; from this instance's
    cache when it knows the token."""
    digest = token_digest(key)
    cache = token_cache()
    cached = cache.get(digest)
    if cached is not None:
        return cached.user, TokenIdentity(
            digest=digest,
            expires_at=cached.expires_at,
            checked_at=time.monotonic(),
            token_id=cached.token_id,
        )
    read_at = time.monotonic()
    token = await token_lookup_async(key)
    if token is None:
        return None, None
    user = TokenUser(token.user_id)
    await cache.put(
        digest,
        CachedToken(
            user=user,
            user_id=str(token.user_id),
            expires_at=token.expires_at,
            read_at=read_at,
            token_id=token.pk,
        ),
    )
    # ``digest``, not the row's equal copy: the cache's key and the socket share one string.
    return user, TokenIdentity(
        digest=digest, expires_at=token.expires_at, checked_at=read_at, token_id=token.pk
    )


def session_identity(scope: dict[str, Any], user: Any) -> SessionIdentity | None:
    """What ends a connection opened with a session cookie: that session's end, or a new
    password (``accounts.authority``)."""
    session = scope.get("session")
    key = getattr(session, "session_key", None) if session is not None else None
    if not key:
        return None
    return SessionIdentity(session_key=key, digest=session_digest(key), password=user.password)


class WebSocketAuthMiddleware(BaseMiddleware):
    """Sets ``scope["user"]`` from ``?token=`` (or the session) and ``scope["auth_close_code"]``.

    ``auth_close_code`` is ``None`` when the socket may proceed, else the close code the
    consumer must use right after accepting. ``scope["auth_token"]`` is the token's
    ``TokenIdentity`` (``None`` for a session), which ends the socket when the token does;
    ``scope["auth_session"]`` the ``SessionIdentity`` of a socket opened with a session
    cookie, which ends it when the session does.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        # Written into, not copied: the server builds a scope per connection (Channels'
        # copy would live as long as the socket does).
        token = _query_param(scope, "token")
        identity: TokenIdentity | None = None
        user: Any
        if token is not None:
            # An unknown, revoked or expired token, or an inactive user: 4401.
            user, identity = await _user_for_token(token) if token else (None, None)
        else:
            user = scope.get("user")
        close_code: int | None = None
        if user is None or not user.is_authenticated or not user.is_active:
            user = AnonymousUser()
            close_code = WS_4401_UNAUTHORIZED
        else:
            requested = _query_param(scope, "user_id")
            if requested is not None and requested != str(user.pk):
                close_code = WS_4403_FORBIDDEN
        scope["user"] = user
        scope["auth_close_code"] = close_code
        scope[SCOPE_KEY] = identity
        scope[SESSION_SCOPE_KEY] = (
            session_identity(scope, user) if token is None and close_code is None else None
        )
        # Not BaseMiddleware's __call__: its second copy of the scope, and its suspended
        # frame, would live as long as the socket does.
        inner = self.inner(scope, receive, send)
        # This frame stays suspended while the socket lives: it must not hold the connect
        # gate's pass-through, which the consumer drops once its ticket is back.
        del receive, send
        try:
            return await inner
        finally:
            # An application that failed before answering still gives its ticket back.
            ticket = scope.get(CONNECT_TICKET_KEY)
            if ticket is not None:
                ticket.release()


class BrowserOriginValidator(OriginValidator):
    """Refuses (403 at the handshake) a browser socket from a host outside ALLOWED_HOSTS.

    A client that sends no ``Origin`` is not a browser and is judged by its token alone;
    Channels' own validator would refuse it.
    """

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[Any]:
        """Channels' check, as a plain function returning the next application's coroutine:
        no frame of ours stays suspended for the socket's whole life."""
        if scope["type"] != "websocket":
            return raise_later(
                ValueError("You cannot use OriginValidator on a non-WebSocket connection")
            )
        parsed_origin = None
        for header_name, header_value in scope.get("headers", []):
            if header_name == b"origin":
                with contextlib.suppress(UnicodeDecodeError):
                    parsed_origin = urlparse(header_value.decode("latin1"))
        if self.valid_origin(parsed_origin):
            return cast(Awaitable[Any], self.application(scope, receive, send))
        return cast(Awaitable[Any], WebsocketDenier()(scope, receive, send))

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return True
        return bool(self.validate_origin(parsed_origin))


Origin = tuple[str, str, int]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_tuple(scheme: str, netloc: str) -> Origin | None:
    """(scheme, host, port) of an origin, the port made explicit; ``None`` if unusable."""
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return scheme, parts.hostname.lower(), port


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _trusted(origin: Origin, entry: str) -> bool:
    """``entry`` is a ``CSRF_TRUSTED_ORIGINS`` item: ``https://host[:port]`` or
    ``https://*.example.com`` (any subdomain), as Django's CSRF check reads them."""
    scheme, _, netloc = entry.partition("://")
    wildcard = netloc.startswith("*.")
    wanted = _origin_tuple(scheme.lower(), netloc[1:] if wildcard else netloc)
    if wanted is None or wanted[0] != origin[0] or wanted[2] != origin[2]:
        return False
    if wildcard:
        return origin[1].endswith(wanted[1]) and origin[1] != wanted[1].lstrip(".")
    return wanted[1] == origin[1]


def cookie_origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether a socket that would be authenticated by its session cookie may be.

    A cookie goes with every request the browser makes, whichever page asked, so a page on
    another origin (another port of an allowed host included) could otherwise open a socket
    with the user's authority: the WebSocket form of CSRF. Such a socket must come from the
    request's own origin (scheme, host and port) or one in ``CSRF_TRUSTED_ORIGINS``. A
    client that sends no ``Origin`` is no browser page, and no page can make a browser omit it.
    """
    raw = _header(scope, b"origin")
    if raw is None:
        return True
    scheme, _, netloc = raw.strip().partition("://")
    origin = _origin_tuple(scheme.lower(), netloc)
    if origin is None:
        return False
    secure = scope.get("scheme") in {"wss", "https"}
    own = _origin_tuple("https" if secure else "http", _header(scope, b"host") or "")
    if own is not None and own == origin:
        return True
    return any(_trusted(origin, entry) for entry in settings.CSRF_TRUSTED_ORIGINS)


def _has_session_cookie(scope: dict[str, Any]) -> bool:
    raw = _header(scope, b"cookie")
    if not raw:
        return False
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(raw)
    except CookieError:
        return False
    return settings.SESSION_COOKIE_NAME in cookies


class CookieOriginGuard:
    """Refuses (403 at the handshake) a session-cookie socket from another origin
    (``cookie_origin_allowed``). A socket with ``?token=`` never comes here: a page that
    holds the token has the user's authority anyway, wherever it is served from."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner
        self.denier = WebsocketDenier()

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[Any]:
        if _has_session_cookie(scope) and not cookie_origin_allowed(scope):
            metrics.connection_rejected(403)
            return cast(Awaitable[Any], self.denier(scope, receive, send))
        return cast(Awaitable[Any], self.inner(scope, receive, send))


class SheddingMiddleware:
    """The first thing a handshake meets: a connect the event loop cannot answer within
    ``CONNECT_MAX_WAIT_MS`` is accepted and closed with ``1013`` and a retry hint at once
    (``accounts.admission``), before the session, the token, the consumer or any
    database work. An admitted connect holds its ticket until the application accepts or
    refuses the socket, or the client goes away first."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[Any]:
        # A plain function returning the inner coroutine: no frame of ours stays suspended
        # for the socket's whole life.
        gate = connect_gate()
        ticket = gate.enter()
        if ticket is None:
            metrics.connection_rejected(WS_1013_TRY_AGAIN_LATER)
            return self._shed(receive, send, gate.retry_after_ms())
        pass_ = TicketRelease(gate, ticket, receive, send)
        # The scope is this connection's own (the server builds one per connection); the
        # authentication middleware gives the ticket back if the application fails first.
        scope[CONNECT_TICKET_KEY] = pass_
        return cast(Awaitable[Any], self.inner(scope, pass_.receive, pass_.send))

    @staticmethod
    async def _shed(receive: Any, send: Any, retry_after_ms: int) -> None:
        message = await receive()
        if message.get("type") != "websocket.connect":
            return None
        await send({"type": "websocket.accept"})
        await send(
            {
                "type": "websocket.close",
                "code": WS_1013_TRY_AGAIN_LATER,
                "reason": retry_reason(retry_after_ms),
            }
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while (await receive()).get("type") != "websocket.disconnect":
                    pass
        return None


class TicketRelease:
    """Gives an admitted connect's ticket back on its answer (accept or close) or on the
    client's disconnect, whichever comes first; a pass-through after that, until the
    consumer takes the server's own callables from ``unwrapped()`` and drops it
    (``realtime_project.runtime.asgi_types.PassThrough``)."""

    __slots__ = ("_gate", "_receive", "_send", "_ticket")

    def __init__(self, gate: ConnectGate, ticket: int, receive: Any, send: Any) -> None:
        self._gate: ConnectGate | None = gate
        self._ticket = ticket
        self._receive = receive
        self._send = send

    def release(self) -> None:
        if self._gate is not None:
            self._gate.leave(self._ticket)
            self._gate = None

    def unwrapped(self) -> tuple[Receive, Send] | None:
        """The server's ``receive`` and ``send`` once the ticket is back, else ``None``."""
        if self._gate is not None:
            return None
        return self._receive, self._send

    # Plain functions returning the server's own awaitable once the ticket is back: an idle
    # socket's pending receive() then holds no coroutine of ours.
    def send(self, message: dict[str, Any]) -> Awaitable[None]:
        if self._gate is not None and message.get("type") in _ANSWERS:
            self.release()
        return cast(Awaitable[None], self._send(message))

    def receive(self) -> Awaitable[dict[str, Any]]:
        if self._gate is None:
            return cast(Awaitable[dict[str, Any]], self._receive())
        return self._receive_watching()

    async def _receive_watching(self) -> dict[str, Any]:
        message: dict[str, Any] = await self._receive()
        if self._gate is not None and message.get("type") in _GONE:
            self.release()
        return message


# A WebSocket's answer, or an event stream's (its response starts when it is accepted or
# refused); and the client going away first.
_ANSWERS: Final = frozenset({"websocket.accept", "websocket.close", "http.response.start"})
_GONE: Final = frozenset({"websocket.disconnect", "http.disconnect"})
# The consumer finds the pass-through here, and removes it once it has dropped it.
CONNECT_TICKET_KEY: Final = PASS_THROUGH_KEY


class TokenOrSessionRouter:
    """A socket that brings ``?token=`` skips the session stack: the token decides who it
    is, and Channels' ``AuthMiddleware`` would spend a trip to the thread-sensitive thread
    on every handshake just to find no session."""

    def __init__(self, inner: ASGIApp) -> None:
        self.with_token = WebSocketAuthMiddleware(inner)
        self.with_session = CookieOriginGuard(AuthMiddlewareStack(self.with_token))

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[Any]:
        app: ASGIApp = (
            self.with_token if _query_param(scope, "token") is not None else self.with_session
        )
        return cast(Awaitable[Any], app(scope, receive, send))


def websocket_stack(inner: ASGIApp) -> ASGIApp:
    """Shedding, the origin check, then token auth (or the cookie's origin, session auth, then
    token auth)."""
    allowed_hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return SheddingMiddleware(BrowserOriginValidator(TokenOrSessionRouter(inner), allowed_hosts))


async def user_for_token(key: str) -> tuple[TokenUser | None, TokenIdentity | None]:
    """The token's user (``None`` if unknown, revoked or expired) and identity, as a socket's
    handshake reads them: for the transports that authenticate outside this module."""
    return await _user_for_token(key)


def has_session_cookie(scope: dict[str, Any]) -> bool:
    """Whether the request carries this site's session cookie."""
    return _has_session_cookie(scope)
