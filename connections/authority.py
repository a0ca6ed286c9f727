"""A live socket never outlives its authority (docs/auth.md).

``SocketAuthorityMixin`` gives the WebSocket consumer everything about the token it holds,
without knowing anything of conversations:

- ``connection_revoke``: the handler of the control message (``connections.control``); a
  socket holding the named token (or any socket, for ``None``) closes with 4401;
- a timer that closes the socket with 4401 the moment its token expires;
- ``authority_swap(key)``: the ``auth`` frame, to move to a fresh token of the same user;
- a periodic re-check (``TOKEN_RECHECK_SECONDS``, one query per instance for all its
  sockets), so that a revocation sent while Redis was down, or a change made behind the
  signals' back (``QuerySet.update``), still takes effect.

The consumer calls ``authority_start()`` once it has joined ``user.<id>`` and
``authority_stop()`` on disconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

from django.utils import timezone

from connections.close_codes import WS_4401_UNAUTHORIZED
from connections.database import database_async
from connections.token_cache import token_cache
from connections.tokens import TokenIdentity, token_lookup, tokens_valid, users_active
from realtime_project.conf import realtime_settings

logger = logging.getLogger(__name__)

SCOPE_KEY = "auth_token"
# Closes started by expiry timers, kept until done (the loop holds tasks only weakly).
_pending: set[asyncio.Future[None]] = set()


class TokenRejected(Exception):
    """The ``auth`` frame's token is unknown, expired, revoked or another user's."""


class SocketAuthorityMixin:
    """Token-bound authority of one consumer; see the module docstring."""

    user_id: str
    scope: Any
    _expiry_timer: asyncio.TimerHandle | None = None
    _authority_started = False

    async def server_close(self, *, code: int) -> None:
        raise NotImplementedError

    @property
    def token_identity(self) -> TokenIdentity | None:
        """The token this socket holds; ``None`` for a session-authenticated socket."""
        identity = self.scope.get(SCOPE_KEY)
        return identity if isinstance(identity, TokenIdentity) else None

    def authority_start(self) -> None:
        self._authority_started = True
        self._expiry_schedule()
        authority_watch.add(self)
        identity = self.token_identity
        if (
            identity is not None
            and identity.checked_at
            and token_cache().revoked_since(
                digest=identity.digest, user_id=self.user_id, since=identity.checked_at
            )
        ):
            # Revoked between the token's check and this socket joining ``user.<id>``.
            task = asyncio.ensure_future(self.authority_revoked())
            _pending.add(task)
            task.add_done_callback(_pending.discard)

    def authority_stop(self) -> None:
        self._authority_started = False
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        authority_watch.discard(self)

    async def authority_revoked(self) -> None:
        self.authority_stop()
        await self.server_close(code=WS_4401_UNAUTHORIZED)

    async def connection_revoke(self, message: dict[str, Any]) -> None:
        token_hash = message.get("token_hash")
        # This socket may have joined ``user.<id>`` before the token cache's channel did.
        token_cache().revoked(
            user_id=self.user_id, token_hash=token_hash if isinstance(token_hash, str) else None
        )
        identity = self.token_identity
        if token_hash is None or (identity is not None and identity.digest == token_hash):
            await self.authority_revoked()

    async def authority_swap(self, key: object) -> dict[str, Any]:
        """Hold the token ``key`` from now on; the socket keeps its old one on failure."""
        if not isinstance(key, str) or not key:
            raise TokenRejected("A token is required.")
        checked_at = time.monotonic()
        token = await database_async(token_lookup)(key)
        if token is None:
            raise TokenRejected("The token is invalid, revoked or expired.")
        if str(token.user_id) != self.user_id:
            raise TokenRejected("The token belongs to another user.")
        self.scope[SCOPE_KEY] = TokenIdentity(
            digest=token.digest, expires_at=token.expires_at, checked_at=checked_at
        )
        if self._authority_started:
            self._expiry_schedule()
        return {"user_id": self.user_id, "expires_at": token.expires_at.isoformat()}

    def _expiry_schedule(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        identity = self.token_identity
        if identity is None:
            return
        delay = max(0.0, (identity.expires_at - timezone.now()).total_seconds())
        loop = asyncio.get_running_loop()
        self._expiry_timer = loop.call_later(delay, self._expired, identity.expires_at)

    def _expired(self, expires_at: datetime) -> None:
        identity = self.token_identity
        if identity is not None and identity.expires_at == expires_at:
            task = asyncio.ensure_future(self.authority_revoked())
            _pending.add(task)
            task.add_done_callback(_pending.discard)


class AuthorityWatch:
    """This instance's token-bound sockets, re-checked against the database periodically."""

    def __init__(self) -> None:
        self._sockets: dict[int, SocketAuthorityMixin] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, socket: SocketAuthorityMixin) -> None:
        self._sockets[id(socket)] = socket
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, socket: SocketAuthorityMixin) -> None:
        self._sockets.pop(id(socket), None)

    def __len__(self) -> int:
        return len(self._sockets)

    async def _run(self) -> None:
        # Ends when the last socket is gone; the next connect starts it again.
        while self._sockets:
            await asyncio.sleep(realtime_settings.TOKEN_RECHECK_SECONDS)
            try:
                await self.sweep()
            except Exception:
                # Database down: the sockets keep what they had until the next sweep.
                logger.exception("re-checking the sockets' tokens failed")

    async def sweep(self) -> int:
        """Close every socket whose token or user is no longer valid; how many closed."""
        sockets = list(self._sockets.values())
        cache = token_cache()
        cached = cache.digests()
        digests = sorted(
            {s.token_identity.digest for s in sockets if s.token_identity}.union(cached)
        )
        session_users = sorted({s.user_id for s in sockets if s.token_identity is None})
        valid = await database_async(tokens_valid)(digests=digests)
        for digest in cached:
            if digest not in valid:
                cache.drop(digest)
        active = await database_async(users_active)(user_ids=session_users)
        stale = [s for s in sockets if not _still_valid(s, valid=valid, active=active)]
        for socket in stale:
            await socket.authority_revoked()
        return len(stale)


def _still_valid(socket: SocketAuthorityMixin, *, valid: set[str], active: set[str]) -> bool:
    identity = socket.token_identity
    return identity.digest in valid if identity is not None else socket.user_id in active


authority_watch = AuthorityWatch()
