"""Valid tokens this instance has seen, so that a connect with one costs no database query.

Design note: docs/auth.md ("The token cache"). A connect used to look its token up in the
database (one query through the database threads) even when the same user had reconnected
a second earlier. The cache maps a token's digest to its user and expiry, per event loop,
and is kept honest the way live sockets are:

- **Revocation.** The cache's own channel joins ``user.<id>`` for every user it holds a
  token of, so the ``connection.revoke`` that closes a user's sockets on every instance
  drops the token (or, for ``None``, all of the user's) here too, even on an instance where
  that user has no socket left. A socket that hears a revocation drops it as well (its
  membership may predate the cache channel's). A revocation that arrives between a cache hit
  and the new socket joining ``user.<id>`` is remembered for a while, and the socket closes
  with 4401 once it has joined (``revoked_since``).
- **Expiry.** A token is never served past its ``expires_at``; at most ``TOKEN_CACHE_SECONDS``
  after it was read from the database it is read again.
- **What no signal announced** (a revocation sent while Redis was down, a
  ``QuerySet.update``): the instance's authority sweep (``accounts.authority``) checks the
  cached tokens in the same query as the sockets' and drops the stale; and the whole cache
  is emptied when the channel layer says a Redis link came back (whatever was published
  meanwhile did not arrive).
- **While revocations cannot arrive** (the layer is degraded, ``control_audible``), the
  cache is neither read nor filled: every connect asks the database, so a logout on
  another instance during the outage is refused here at once.

Without a channel layer there is no revocation to hear: nothing is cached.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from channels.layers import get_channel_layer

from accounts.clock import token_clock
from connections.control import control_audible, user_group
from connections.layer_messages import (
    CONTROL_VERSIONS,
    REVOKE_MESSAGE_TYPE,
    ConnectionRevoke,
    layer_message_readable,
)
from realtime_project.conf import realtime_settings

logger = logging.getLogger(__name__)

# How long a revocation is remembered for sockets that were between lookup and joining.
REVOKED_MEMORY_SECONDS = 60.0


class TokenUser:
    """The user of a token-authenticated socket, as ``scope["user"]``: its id, and Django's
    user protocol as far as a socket reads it (``is_authenticated``, ``is_active``,
    ``is_anonymous``). Not the full row: every socket kept one (its password hash, names,
    dates, the model's state) as long as it lived, to read its id. Built only for an active
    user (``token_lookup``), as the row was a snapshot too; a later deactivation closes the
    socket (docs/auth.md).

    Code that needs the row reads it by ``pk``; nothing on a socket does
    (``chat.live_socket``, ``chat.stream``). A failed authentication is still Django's
    ``AnonymousUser``.
    """

    __slots__ = ("pk",)

    is_authenticated: Final = True
    is_anonymous: Final = False
    is_active: Final = True

    def __init__(self, pk: int) -> None:
        self.pk = pk

    @property
    def id(self) -> int:
        return self.pk

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenUser) and other.pk == self.pk

    def __hash__(self) -> int:
        return hash(self.pk)

    def __repr__(self) -> str:
        return f"<TokenUser {self.pk}>"


@dataclass(frozen=True, slots=True)
class CachedToken:
    user: TokenUser
    user_id: str
    expires_at: datetime
    read_at: float  # time.monotonic() of the database read
    token_id: int  # the row's id, what the authority sweep asks about


class TokenCache:
    """One event loop's cache; see the module docstring."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        # Least recently used first. A plain dict (an entry re-inserted on use), not an
        # OrderedDict, whose linked node per entry costs every cached token more.
        self._tokens: dict[str, CachedToken] = {}
        # A user's cached digests: nearly always one, so a tuple (48 B), not a set (216 B).
        self._by_user: dict[str, tuple[str, ...]] = {}
        self._revoked_tokens: dict[str, float] = {}
        self._revoked_users: dict[str, float] = {}
        self._channel: str | None = None
        self._reader: asyncio.Task[None] | None = None
        self._remove_listener: Any = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._tokens)

    def digests(self) -> list[str]:
        return list(self._tokens)

    def token_ids(self) -> dict[int, str]:
        """Each cached token's row id, with its digest."""
        return {entry.token_id: digest for digest, entry in self._tokens.items()}

    def get(self, digest: str) -> CachedToken | None:
        """The cached valid token, or ``None`` (unknown, expired, too old, or no revocation
        can reach this instance now)."""
        entry = self._tokens.get(digest) if control_audible(self.layer) else None
        if entry is not None:
            max_age = realtime_settings.TOKEN_CACHE_SECONDS
            if entry.expires_at <= token_clock.now() or time.monotonic() - entry.read_at > max_age:
                self.drop(digest)
                entry = None
            else:
                self._tokens[digest] = self._tokens.pop(digest)  # now the most recent
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    async def put(self, digest: str, entry: CachedToken) -> None:
        """Remember a token just read from the database (valid at ``entry.read_at``)."""
        size = realtime_settings.TOKEN_CACHE_SIZE
        if size <= 0 or not control_audible(self.layer):
            return
        if not await self._listening(entry.user_id):
            return
        if self._revoked_after(digest, entry.user_id, entry.read_at):
            return  # revoked while it was being read
        self._tokens.pop(digest, None)
        self._tokens[digest] = entry
        digests = self._by_user.get(entry.user_id, ())
        if digest not in digests:
            self._by_user[entry.user_id] = (*digests, digest)
        while len(self._tokens) > size:
            self.drop(next(iter(self._tokens)))

    def drop(self, digest: str) -> None:
        entry = self._tokens.pop(digest, None)
        if entry is None:
            return
        digests = self._by_user.get(entry.user_id)
        if digests is not None:
            rest = tuple(d for d in digests if d != digest)
            if rest:
                self._by_user[entry.user_id] = rest
            else:
                del self._by_user[entry.user_id]
                self._unlisten(entry.user_id)

    def revoked(self, *, user_id: str, token_hash: str | None) -> None:
        """A ``connection.revoke`` for ``user_id`` (every token of the user for ``None``)."""
        now = time.monotonic()
        self._forget_old(now)
        if token_hash is None:
            self._revoked_users[user_id] = now
            for digest in self._by_user.get(user_id, ()):
                self.drop(digest)
        else:
            self._revoked_tokens[token_hash] = now
            self.drop(token_hash)

    def revoked_since(self, *, digest: str, user_id: str, since: float) -> bool:
        """Whether a revocation of this token (or user) arrived after ``since`` (monotonic)."""
        return self._revoked_after(digest, user_id, since)

    def clear(self) -> None:
        """Forget every token (a Redis link came back: revocations may have been missed)."""
        for digest in list(self._tokens):
            self.drop(digest)

    def _revoked_after(self, digest: str, user_id: str, since: float) -> bool:
        return (
            self._revoked_tokens.get(digest, -1.0) >= since
            or self._revoked_users.get(user_id, -1.0) >= since
        )

    def _forget_old(self, now: float) -> None:
        cutoff = now - REVOKED_MEMORY_SECONDS
        for memory in (self._revoked_tokens, self._revoked_users):
            for key in [k for k, at in memory.items() if at < cutoff]:
                del memory[key]

    # -- the cache's channel ------------------------------------------------------------

    async def _listening(self, user_id: str) -> bool:
        """Join ``user.<id>`` with the cache's channel; False if there is no layer."""
        layer = self.layer
        if layer is None:
            return False
        if self._channel is None:
            self._channel = await layer.new_channel("tokens.")
            self._reader = asyncio.get_running_loop().create_task(
                self._read(layer, self._channel), name="token-cache"
            )
            add_listener = getattr(layer, "add_recovery_listener", None)
            if add_listener is not None:
                self._remove_listener = add_listener(self.clear)
        if user_id not in self._by_user:
            await layer.group_add(user_group(user_id), self._channel)
        return True

    def _unlisten(self, user_id: str) -> None:
        layer = self.layer
        if layer is None or self._channel is None:
            return
        task = asyncio.get_running_loop().create_task(
            layer.group_discard(user_group(user_id), self._channel)
        )
        _pending.add(task)
        task.add_done_callback(_pending.discard)

    async def _read(self, layer: Any, channel: str) -> None:
        while True:
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("token cache channel failed; forgetting every token")
                self.clear()
                await asyncio.sleep(1.0)
                continue
            if message.get("type") != REVOKE_MESSAGE_TYPE:
                continue  # the user's events and other control messages: the sockets' own
            if not layer_message_readable(message, CONTROL_VERSIONS):
                # A revocation of a newer release, unread, still revoked something: forget
                # every token (the next connects ask the database).
                self.clear()
                continue
            self._revoke(message)

    def _revoke(self, message: ConnectionRevoke) -> None:
        user_id = message.get("user_id")
        token_hash = message.get("token_hash")
        if isinstance(token_hash, str):
            self.revoked(user_id=self._owner(token_hash) or "", token_hash=token_hash)
        elif isinstance(user_id, str):
            self.revoked(user_id=user_id, token_hash=None)
        else:
            # An old sender that does not say whose tokens: forget them all.
            self.clear()

    def close(self) -> None:
        """Stop listening (the process's channel layer was replaced: tests)."""
        if self._reader is not None:
            self._reader.cancel()
        if self._remove_listener is not None:
            self._remove_listener()
        self._tokens.clear()
        self._by_user.clear()

    def _owner(self, digest: str) -> str | None:
        entry = self._tokens.get(digest)
        return entry.user_id if entry is not None else None


_pending: set[asyncio.Task[None]] = set()
_caches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TokenCache] = (
    weakref.WeakKeyDictionary()
)


def token_cache() -> TokenCache:
    """The running event loop's token cache (for the current channel layer)."""
    loop = asyncio.get_running_loop()
    layer = get_channel_layer()
    cache = _caches.get(loop)
    if cache is None or cache.layer is not layer:
        if cache is not None:
            cache.close()
        cache = _caches[loop] = TokenCache(layer)
    return cache
