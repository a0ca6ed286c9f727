"""Typed access to the project's namespaced settings (``settings.REALTIME``).

Read through ``realtime_settings.NAME`` at call time, never copied at import, so that
``override_settings(REALTIME=...)`` in tests and the environment at start both apply.

Each key is declared below with its type, so a read needs no ``int()`` or ``float()`` at the
call site and a misspelt name fails type checking (as Starlette's ``Config(cast=...)`` returns
the type asked for). The value is cast to the declared scalar type when read, so an override
of ``1`` where a float belongs still reads as ``1.0``. settings.py builds the values (from the
environment, failing loudly on a bad one); tests/foundation/test_settings.py checks that every
key there is declared here and the other way round.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from django.conf import settings

_SCALARS: tuple[type, ...] = (bool, int, float, str)


class RealtimeSettings:
    INSTANCE_ID: str
    REDIS_URL: str | None
    REDIS_SENTINELS: list[str]
    REDIS_SENTINEL_MASTER: str
    REDIS_CLUSTER: bool
    REDIS_SOCKET_TIMEOUT_SECONDS: float
    REDIS_CONNECT_TIMEOUT_SECONDS: float
    FIRESTORE_PROJECT_ID: str | None
    PRESENCE_COLLECTION: str
    PRESENCE_GRACE_SECONDS: float
    PRESENCE_DEADLINE_POLL_SECONDS: float
    PRESENCE_RECONCILE_SECONDS: float
    PRESENCE_STORE_TIMEOUT_SECONDS: float
    PRESENCE_RETRY_MAX_SECONDS: float
    PRESENCE_AUDIENCE: str
    CONNECTION_TTL_SECONDS: float
    HEARTBEAT_INTERVAL_SECONDS: float
    MESSAGE_MAX_LENGTH: int
    WS_MAX_FRAME_BYTES: int
    WS_MAX_BUFFERED_BYTES: int
    WS_SEND_STALL_SECONDS: float
    TRUSTED_PROXIES: list[str]
    MAX_SOCKETS_PER_USER: int
    TYPING_TIMEOUT_SECONDS: float
    RATE_LIMIT_FRAMES_PER_SECOND: float
    RATE_LIMIT_BURST: int
    RATE_LIMIT_MAX_STRIKES: int
    CHANNEL_CAPACITY: int
    LAYER_GROUP_LINGER_SECONDS: float
    LAYER_GROUP_LINGER_MAX: int
    DATABASE_THREADS: int
    DATABASE_ASYNC_CONNECTIONS: int
    MESSAGE_BATCH_MAX: int
    CONNECT_MAX_IN_FLIGHT: int
    CONNECT_MAX_WAIT_MS: int
    CONNECT_RETRY_MAX_MS: int
    GC_GEN0_THRESHOLD: int
    MALLOC_ARENA_MAX: int
    EVENT_LOOP: Literal["uvloop", "asyncio"]
    PROCESSES: int
    TOKEN_CACHE_SIZE: int
    TOKEN_CACHE_SECONDS: float
    RESUME_MAX_EVENTS: int
    HEAL_INTERVAL_SECONDS: float
    CONVERSATION_MAX_PARTICIPANTS: int
    USER_MAX_CONVERSATIONS: int
    PARTICIPANT_ADD_POLICY: str
    DRAIN_DELAY_SECONDS: float
    DRAIN_BATCH_SIZE: int
    DRAIN_CLOSE_RATE: float
    METRICS_ACCESS: Literal["open", "staff"]
    METRICS_TOKEN: str | None
    METRICS_CACHE_SECONDS: float
    TOKEN_TTL_SECONDS: float
    TOKEN_RECHECK_SECONDS: float
    AUTH_FAILURES_PER_MINUTE: int
    AUTH_FAILURES_PER_ADDRESS_PER_MINUTE: int
    AUTH_LOCKOUT_SCOPE: Literal["username", "username_address"]
    HEALTH_TIMEOUT_SECONDS: float
    HEALTH_CACHE_SECONDS: float
    REBALANCE_THRESHOLD: float
    REBALANCE_MIN_SURPLUS: int
    REBALANCE_CLOSE_RATE: float
    REBALANCE_INTERVAL_SECONDS: float
    WEBHOOK_URLS: list[str]
    WEBHOOK_SECRET: str | None
    WEBHOOK_MAX_AGE_SECONDS: float
    WEBHOOK_BATCH_SIZE: int
    WEBHOOK_TIMEOUT_SECONDS: float
    WEBHOOK_LEASE_SECONDS: float
    WEBHOOK_BACKOFF_BASE_SECONDS: float
    WEBHOOK_BACKOFF_MAX_SECONDS: float
    WEBHOOK_POLL_SECONDS: float

    if not TYPE_CHECKING:  # to a type checker, only the names declared above exist

        def __getattr__(self, name: str) -> Any:
            try:
                value = settings.REALTIME[name]
            except KeyError:
                raise AttributeError(f"settings.REALTIME has no key {name!r}") from None
            cast = _casts().get(name)
            return value if cast is None or value is None else cast(value)


def declared_names() -> frozenset[str]:
    """Every key ``RealtimeSettings`` declares."""
    return frozenset(typing.get_type_hints(RealtimeSettings))


_cast_table: dict[str, Callable[[Any], Any]] | None = None


def _casts() -> dict[str, Callable[[Any], Any]]:
    """Per declared scalar key (``int``, ``float``, ``str | None`` ...), the cast to apply."""
    global _cast_table
    if _cast_table is None:
        table: dict[str, Callable[[Any], Any]] = {}
        for name, hint in typing.get_type_hints(RealtimeSettings).items():
            if typing.get_origin(hint) in (typing.Union, types.UnionType):
                options = [h for h in typing.get_args(hint) if h is not type(None)]
            else:
                options = [hint]
            if len(options) == 1 and options[0] in _SCALARS:
                table[name] = options[0]
        _cast_table = table
    return _cast_table


realtime_settings = RealtimeSettings()
