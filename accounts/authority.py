"""A live socket never outlives its authority (docs/auth.md).

``SocketAuthorityMixin`` gives the WebSocket consumer everything about the token it holds,
without knowing anything of conversations:

- ``connection_revoke``: the handler of the control message (``connections.control``); a
  socket holding the named token, or opened with the named session (or any socket, for
  ``None``) closes with 4401;
- the close with 4401 the moment its token expires (the event loop's one expiry schedule,
  ``accounts.expiry``: one timer for every socket, not one each);
- ``authority_swap(key)``: the ``auth`` frame, to move to a fresh token of the same user;
- the instance's authority sweep (``TOKEN_RECHECK_SECONDS``, 1 s: a few queries per instance
  for all its sockets), so that a revocation sent while Redis was down, a session that
  expired, or a change made behind the signals' back (``QuerySet.update``) still takes effect
  within 2 s.

The consumer calls ``authority_start()`` once it has joined ``user.<id>`` and
``authority_stop()`` on disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from channels.layers import get_channel_layer

from accounts.expiry import ExpiryEntry, expiry_schedule
from accounts.sessions import SessionIdentity, sessions_live, sessions_stored_in_database
from accounts.token_cache import token_cache
from accounts.tokens import TokenIdentity, token_lookup, tokens_valid, users_passwords
from connections.layer_messages import ConnectionRevoke
from realtime_layer import RealtimeChannelLayer
from realtime_project.close_codes import WS_4401_UNAUTHORIZED
from realtime_project.conf import realtime_settings
from realtime_project.database import database_async

logger = logging.getLogger(__name__)

SCOPE_KEY = "auth_token"
SESSION_SCOPE_KEY = "auth_session"
# Sockets a sweep walks before letting the event loop run others: at 10,000 sockets a sweep
# held the loop for ~25 ms in one piece (docs/auth.md), a pause every frame would feel.
_SWEEP_SLICE = 1000
# Closes started by the expiry schedule, kept until done (the loop holds tasks only weakly).
_pending: set[asyncio.Future[None]] = set()


class TokenRejected(Exception):
    """The ``auth`` frame's token is unknown, expired, revoked or another user's."""


class SocketAuthorityMixin:
    """Token-bound authority of one consumer; see the module docstring."""

    user_id: str
    scope: Any
    _expiry_entry: ExpiryEntry | None = None
    _authority_started = False

    async def server_close(self, *, code: int) -> None:
        raise NotImplementedError

    @property
    def token_identity(self) -> TokenIdentity | None:
        """The token this socket holds; ``None`` for a session-authenticated socket."""
        identity = self.scope.get(SCOPE_KEY)
        return identity if isinstance(identity, TokenIdentity) else None

    @property
    def session_identity(self) -> SessionIdentity | None:
        """The session this socket was opened with; ``None`` for a token-bound socket."""
        identity = self.scope.get(SESSION_SCOPE_KEY)
        return identity if isinstance(identity, SessionIdentity) else None

    def authority_init(self) -> None:
        """From the consumer's ``__init__``: its attributes set at once, in the class's shared
        table (``realtime_project.runtime.dispatch.LeanDispatchMixin.__init__`` says why)."""
        self._expiry_entry = None
        self._authority_started = False

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
        self._expiry_cancel()
        authority_watch.discard(self)

    async def authority_revoked(self) -> None:
        self.authority_stop()
        await self.server_close(code=WS_4401_UNAUTHORIZED)

    async def connection_revoke(self, message: ConnectionRevoke) -> None:
        token_hash = message.get("token_hash")
        # This socket may have joined ``user.<id>`` before the token cache's channel did.
        token_cache().revoked(
            user_id=self.user_id, token_hash=token_hash if isinstance(token_hash, str) else None
        )
        if token_hash is None or token_hash in self._authority_names():
            await self.authority_revoked()

    def _authority_names(self) -> tuple[str, ...]:
        token, session = self.token_identity, self.session_identity
        if token is not None:
            return (token.digest,)
        return (session.digest,) if session is not None else ()

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
            digest=token.digest,
            expires_at=token.expires_at,
            checked_at=checked_at,
            token_id=token.pk,
        )
        if self._authority_started:
            self._expiry_schedule()
        return {"user_id": self.user_id, "expires_at": token.expires_at.isoformat()}

    def _expiry_schedule(self) -> None:
        self._expiry_cancel()
        identity = self.token_identity
        if identity is not None:
            self._expiry_entry = expiry_schedule().add(self, identity.expires_at)

    def _expiry_cancel(self) -> None:
        entry = self._expiry_entry
        if entry is not None:
            self._expiry_entry = None
            expiry_schedule().remove(entry)

    def token_expired(self) -> None:
        """The schedule's call: the token this socket holds (its entry is the current
        token's, replaced on every swap) has reached its ``expires_at``."""
        self._expiry_entry = None
        task = asyncio.ensure_future(self.authority_revoked())
        _pending.add(task)
        task.add_done_callback(_pending.discard)


@dataclass(frozen=True)
class AuthorityState:
    """What the database says now about the tokens, sessions and users of an instance."""

    tokens: set[int]  # valid token ids
    sessions: set[str] | None  # live session keys; None: sessions are not in the database
    passwords: dict[str, str]  # active user id -> password hash


def authority_read(
    *, token_ids: list[int], session_keys: list[str], user_ids: list[str]
) -> AuthorityState:
    """One read for a whole sweep, on one database thread."""
    return AuthorityState(
        tokens=tokens_valid(token_ids=token_ids),
        sessions=(
            sessions_live(session_keys=session_keys) if sessions_stored_in_database() else None
        ),
        passwords=users_passwords(user_ids=user_ids),
    )


class AuthorityWatch:
    """This instance's sockets, all re-checked against the database every
    ``TOKEN_RECHECK_SECONDS`` in one sweep (a few queries, however many sockets)."""

    def __init__(self) -> None:
        self._sockets: dict[int, SocketAuthorityMixin] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._remove_listener: Any = None
        self.sweeps = 0

    def add(self, socket: SocketAuthorityMixin) -> None:
        self._sockets[id(socket)] = socket
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, socket: SocketAuthorityMixin) -> None:
        self._sockets.pop(id(socket), None)

    def __len__(self) -> int:
        return len(self._sockets)

    def _listen_for_recovery(self, wake: asyncio.Event) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        layer = get_channel_layer()
        if isinstance(layer, RealtimeChannelLayer):
            # Revocations published while the link was down never arrive: sweep at once.
            self._remove_listener = layer.add_recovery_listener(wake.set)

    async def _run(self) -> None:
        # Ends when the last socket is gone; the next connect starts it again.
        wake = self._wake = asyncio.Event()
        self._listen_for_recovery(wake)
        failing = False
        try:
            while self._sockets:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(realtime_settings.TOKEN_RECHECK_SECONDS):
                        await wake.wait()
                wake.clear()
                try:
                    await self.sweep()
                    failing = False
                except Exception:
                    # Database down: the sockets keep what they had until it answers again.
                    if not failing:
                        logger.exception("re-checking the sockets' authority failed")
                    failing = True
        finally:
            if self._remove_listener is not None:
                self._remove_listener()
                self._remove_listener = None

    async def sweep(self) -> int:
        """Close every socket whose token, session or user is no longer valid; how many."""
        sockets = list(self._sockets.values())
        cache = token_cache()
        cached = cache.token_ids()
        token_ids: set[int] = set(cached)
        session_keys: set[str] = set()
        user_ids: set[str] = set()
        # What each socket held when asked about: one that swaps tokens meanwhile (the
        # ``auth`` frame) is judged at the next sweep, not by an answer about another token.
        # (A list beside ``sockets``, not a tuple per socket: 10,000 new containers a second
        # would feed the garbage collector's full passes.)
        held: list[TokenIdentity | None] = []
        for index, socket in enumerate(sockets, 1):
            token = socket.token_identity
            held.append(token)
            if token is not None:
                token_ids.add(token.token_id)
            else:
                user_ids.add(socket.user_id)
                session = socket.session_identity
                if session is not None:
                    session_keys.add(session.session_key)
            if index % _SWEEP_SLICE == 0:
                await asyncio.sleep(0)  # let frames through between slices
        state = await database_async(authority_read)(
            token_ids=list(token_ids), session_keys=list(session_keys), user_ids=list(user_ids)
        )
        self.sweeps += 1
        for token_id, digest in cached.items():
            if token_id not in state.tokens:
                cache.drop(digest)
        stale = 0
        for index, (socket, token) in enumerate(zip(sockets, held, strict=True), 1):
            if socket.token_identity is token and not _still_valid(socket, token, state):
                stale += 1
                await socket.authority_revoked()
            if index % _SWEEP_SLICE == 0:
                await asyncio.sleep(0)
        return stale


def _still_valid(
    socket: SocketAuthorityMixin, token: TokenIdentity | None, state: AuthorityState
) -> bool:
    if token is not None:
        return token.token_id in state.tokens
    password = state.passwords.get(socket.user_id)
    if password is None:
        return False  # deactivated or deleted
    session = socket.session_identity
    if session is None:
        return True
    if state.sessions is not None and session.session_key not in state.sessions:
        return False  # ended: logout, flush, expiry (read now, so an extension counts)
    return session.password == password


authority_watch = AuthorityWatch()
