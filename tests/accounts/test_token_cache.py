"""The token cache: a reconnect costs no query; a revoked token is refused at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.utils import timezone

import accounts.auth
from accounts.models import AuthToken, token_digest
from accounts.token_cache import token_cache
from accounts.tokens import token_lookup_async
from connections.control import user_group
from connections.layer_messages import CONNECTION_REVOKE_VERSION, connection_revoke_message
from realtime_project.close_codes import WS_4401_UNAUTHORIZED
from tests.support.async_poll import async_wait_until
from tests.support.clock import *  # noqa: F403
from tests.support.clock import MovableClock
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.consumer_fixtures import Demo
from tests.support.tokens import token_issued
from tests.support.ws_client import frame_is

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every database lookup of a token the handshake makes."""
    seen: list[str] = []
    real: Callable[[str], Awaitable[Any]] = token_lookup_async

    async def counting(key: str) -> Any:
        seen.append(key)
        return await real(key)

    monkeypatch.setattr(accounts.auth, "token_lookup_async", counting)
    return seen


async def _connect_and_close(open_socket, user, token: str) -> None:
    socket = await open_socket(user, token=token)
    await socket.recv_until(frame_is("connected"))
    await socket.disconnect()


async def test_a_reconnect_with_a_known_token_makes_no_query(
    open_socket, demo: Demo, lookups: list[str]
) -> None:
    await _connect_and_close(open_socket, demo.alice, demo.alice.token)
    await _connect_and_close(open_socket, demo.alice, demo.alice.token)
    both = [await open_socket(demo.alice) for _ in range(2)]
    for socket in both:
        await socket.recv_until(frame_is("connected"))
    assert lookups == [demo.alice.token]
    assert token_cache().hits == 3


async def test_a_token_revoked_with_no_socket_left_here_is_refused(
    open_socket, demo: Demo, lookups: list[str]
) -> None:
    await _connect_and_close(open_socket, demo.alice, demo.alice.token)
    digest = token_digest(demo.alice.token)
    assert digest in token_cache().digests()
    await AuthToken.objects.filter(digest=digest).adelete()  # logout: the signal revokes
    await async_wait_until(
        lambda: digest not in token_cache().digests(),
        timeout=3,
        interval=0.01,
        what="the revocation to drop the token from the cache",
    )
    again = await open_socket(demo.alice)
    assert await again.wait_closed() == WS_4401_UNAUTHORIZED
    assert lookups == [demo.alice.token, demo.alice.token]


async def test_the_least_recently_used_token_is_the_one_forgotten(
    open_socket, demo: Demo, lookups: list[str], realtime_override
) -> None:
    realtime_override(TOKEN_CACHE_SIZE=2)
    for user in (demo.alice, demo.bob, demo.alice, demo.carol):  # bob's is the oldest use
        await _connect_and_close(open_socket, user, user.token)
    assert lookups == [demo.alice.token, demo.bob.token, demo.carol.token]
    await _connect_and_close(open_socket, demo.alice, demo.alice.token)
    await _connect_and_close(open_socket, demo.bob, demo.bob.token)
    assert lookups == [demo.alice.token, demo.bob.token, demo.carol.token, demo.bob.token]


async def test_revoking_one_of_a_users_tokens_keeps_the_other_cached(
    open_socket, demo: Demo, lookups: list[str]
) -> None:
    second = await token_issued(demo.alice.id)
    await _connect_and_close(open_socket, demo.alice, demo.alice.token)
    await _connect_and_close(open_socket, demo.alice, second)
    first = token_digest(demo.alice.token)
    await AuthToken.objects.filter(digest=first).adelete()
    await async_wait_until(
        lambda: first not in token_cache().digests(),
        timeout=3,
        interval=0.01,
        what="the revocation to drop the first token from the cache",
    )
    assert token_digest(second) in token_cache().digests()
    await _connect_and_close(open_socket, demo.alice, second)
    assert lookups == [demo.alice.token, second]
    # The cache still hears the user's revocations: the second token's goes too.
    await AuthToken.objects.filter(digest=token_digest(second)).adelete()
    await async_wait_until(
        lambda: len(token_cache()) == 0,
        timeout=3,
        interval=0.01,
        what="the revocation to drop the second token from the cache",
    )


async def test_deactivating_the_user_drops_every_token_of_theirs(open_socket, demo: Demo) -> None:
    second = await token_issued(demo.bob.id)
    await _connect_and_close(open_socket, demo.bob, demo.bob.token)
    await _connect_and_close(open_socket, demo.bob, second)
    user = await get_user_model().objects.aget(pk=demo.bob.id)
    user.is_active = False
    await user.asave()
    await async_wait_until(
        lambda: len(token_cache()) == 0,
        timeout=3,
        interval=0.01,
        what="the revocation to empty the cache of the user's tokens",
    )
    for key in (demo.bob.token, second):
        socket = await open_socket(demo.bob, token=key)
        assert await socket.wait_closed() == WS_4401_UNAUTHORIZED


async def test_a_cached_token_is_not_served_past_its_expiry(
    open_socket, demo: Demo, token_time: MovableClock
) -> None:
    key = await token_issued(demo.carol.id, ttl_seconds=1)
    await _connect_and_close(open_socket, demo.carol, key)
    digest = token_digest(key)
    assert digest in token_cache().digests()
    token_time.advance(0.9)
    assert token_cache().get(digest) is not None, "dropped before its expiry"
    token_time.advance(0.1)
    assert token_cache().get(digest) is None, "still served at its expiry"
    socket = await open_socket(demo.carol, token=key)
    assert await socket.wait_closed() == WS_4401_UNAUTHORIZED


async def test_a_revocation_between_lookup_and_join_closes_the_new_socket(
    open_socket, demo: Demo
) -> None:
    await _connect_and_close(open_socket, demo.alice, demo.alice.token)
    cache = token_cache()
    digest = token_digest(demo.alice.token)
    # As if the revocation arrived after the cache hit but before the socket's group join.
    real_get = cache.get

    def hit_then_revoke(wanted: str) -> Any:
        entry = real_get(wanted)
        if entry is not None:
            asyncio.get_running_loop().call_soon(
                lambda: cache.revoked(user_id=demo.alice.id, token_hash=digest)
            )
        return entry

    cache.get = hit_then_revoke  # type: ignore[method-assign,assignment]
    socket = await open_socket(demo.alice)
    assert await socket.wait_closed(within=3) == WS_4401_UNAUTHORIZED


async def test_the_recheck_drops_a_cached_token_no_signal_announced(
    open_socket, demo: Demo, realtime_override
) -> None:
    realtime_override(TOKEN_RECHECK_SECONDS=0.2)
    key = await token_issued(demo.dave.id)
    await _connect_and_close(open_socket, demo.dave, key)
    alice = await open_socket(demo.alice)  # keeps the instance's re-check running
    await alice.recv_until(frame_is("connected"))
    # QuerySet.update sends no signal: the cache still holds the old expiry.
    await AuthToken.objects.filter(digest=token_digest(key)).aupdate(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    await async_wait_until(
        lambda: token_digest(key) not in token_cache().digests(),
        timeout=3,
        what="the re-check to drop the token from the cache",
    )


async def test_a_revocation_of_a_newer_version_forgets_every_token(open_socket, demo: Demo) -> None:
    """A rolling deployment's newer ``connection.revoke`` cannot be read here, yet it revoked
    something: the cache forgets every token rather than keep serving one it should not."""
    await _connect_and_close(open_socket, demo.alice, demo.alice.token)
    await _connect_and_close(open_socket, demo.bob, demo.bob.token)
    digests = {token_digest(demo.alice.token), token_digest(demo.bob.token)}
    assert digests <= set(token_cache().digests())
    newer = {
        **connection_revoke_message(user_id=demo.alice.id, token_hash="someone-else"),
        "v": CONNECTION_REVOKE_VERSION + 1,
    }
    await get_channel_layer().group_send(user_group(demo.alice.id), newer)
    await async_wait_until(
        lambda: not digests & set(token_cache().digests()),
        timeout=3,
        interval=0.01,
        what="the unreadable revocation to empty the cache",
    )
    # A token nobody revoked still connects, asking the database again.
    socket = await open_socket(demo.bob)
    await socket.recv_until(frame_is("connected"))
