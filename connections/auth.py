"""WebSocket authentication and origin checks, applied in ``realtime_project/asgi.py``.

Browsers cannot set headers on a WebSocket, so the token travels as ``?token=``; a Django
session cookie works too. A failed check does not refuse the handshake: the consumer accepts
and closes with 4401/4403 so that clients can tell "bad credentials" from "server down"
(a refused handshake only shows up as a generic 403 or 1006 in browsers).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from django.contrib.auth.models import AnonymousUser

from connections.authority import SCOPE_KEY
from connections.close_codes import WS_4401_UNAUTHORIZED, WS_4403_FORBIDDEN
from connections.tokens import TokenIdentity, token_lookup

ASGIApp = Any


def _query_param(scope: dict[str, Any], name: str) -> str | None:
    params = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = params.get(name)
    return values[0] if values else None


@database_sync_to_async
def _user_for_token(key: str) -> tuple[Any, TokenIdentity | None]:
    token = token_lookup(key)
    if token is None:
        return None, None
    return token.user, TokenIdentity(digest=token.digest, expires_at=token.expires_at)


class WebSocketAuthMiddleware(BaseMiddleware):
    """Sets ``scope["user"]`` from ``?token=`` (or the session) and ``scope["auth_close_code"]``.

    ``auth_close_code`` is ``None`` when the socket may proceed, else the close code the
    consumer must use right after accepting. ``scope["auth_token"]`` is the token's
    ``TokenIdentity`` (``None`` for a session), which ends the socket when the token does.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        token = _query_param(scope, "token")
        identity: TokenIdentity | None = None
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
        return await super().__call__(scope, receive, send)


class BrowserOriginValidator(OriginValidator):
    """Refuses (403 at the handshake) a browser socket from a host outside ALLOWED_HOSTS.

    A client that sends no ``Origin`` is not a browser and is judged by its token alone;
    Channels' own validator would refuse it.
    """

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return True
        return bool(self.validate_origin(parsed_origin))


def websocket_stack(inner: ASGIApp) -> ASGIApp:
    """Origin check, then session auth, then token auth, around ``inner``."""
    from django.conf import settings

    allowed_hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(
        AuthMiddlewareStack(WebSocketAuthMiddleware(inner)), allowed_hosts
    )
