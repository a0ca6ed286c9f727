"""A live socket follows its token in-process: revocation, expiry, re-check and swap."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model

from accounts.authority import authority_watch
from accounts.expiry import expiry_schedule
from accounts.models import AuthToken, token_digest
from chat.event_types import PresenceEvent, event_frame
from chat.layer_messages import realtime_event_message
from connections import control
from realtime_project.close_codes import WS_4401_UNAUTHORIZED
from tests.support.async_poll import async_wait_until
from tests.support.clock import *  # noqa: F403
from tests.support.clock import MovableClock
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.consumer_fixtures import Demo
from tests.support.tokens import token_issued
from tests.support.ws_client import frame_is

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def _delete(key: str) -> None:
    AuthToken.objects.get(digest=token_digest(key)).delete()


async def _connected(open_socket, demo_user, token: str):
    socket = await open_socket(demo_user, token=token)
    await socket.recv_until(frame_is("connected"))
    return socket


async def _after_what_was_sent(socket, user_id: str) -> None:
    """Once this returns, the socket has handled every control message sent to its user
    before the call: a marker sent after them on the same group comes back after them."""
    marker = event_frame(PresenceEvent(user_id="marker", status="away", last_seen=None))
    message = realtime_event_message(marker)
    await get_channel_layer().group_send(control.user_group(user_id), message)
    await socket.recv_until(lambda frame: frame.get("event_id") == marker["event_id"])


async def test_deleting_a_token_closes_its_sockets_only(open_socket, demo: Demo) -> None:
    doomed_key = await token_issued(demo.alice.id)
    doomed = await _connected(open_socket, demo.alice, doomed_key)
    other = await _connected(open_socket, demo.alice, demo.alice.token)
    await _delete(doomed_key)
    assert await doomed.wait_closed(within=2) == WS_4401_UNAUTHORIZED
    assert (await other.request({"type": "ping"}))["type"] == "pong"
    # Reconnecting with the revoked token is refused.
    again = await open_socket(demo.alice, token=doomed_key)
    assert await again.wait_closed() == WS_4401_UNAUTHORIZED


async def test_deactivating_the_user_closes_every_socket(open_socket, demo: Demo) -> None:
    first = await _connected(open_socket, demo.bob, demo.bob.token)
    second = await _connected(open_socket, demo.bob, await token_issued(demo.bob.id))
    user = await get_user_model().objects.aget(pk=demo.bob.id)
    user.is_active = False
    await user.asave()
    assert await first.wait_closed(within=2) == WS_4401_UNAUTHORIZED
    assert await second.wait_closed(within=2) == WS_4401_UNAUTHORIZED


async def test_a_token_expiring_while_open_closes_the_socket(
    open_socket, demo: Demo, token_time: MovableClock
) -> None:
    socket = await _connected(
        open_socket, demo.alice, await token_issued(demo.alice.id, ttl_seconds=1)
    )
    assert (await socket.request({"type": "ping"}))["type"] == "pong"
    token_time.advance(0.9)
    assert (await socket.request({"type": "ping"}))["type"] == "pong"  # not before its time
    token_time.advance(0.1)
    assert await socket.wait_closed(within=3) == WS_4401_UNAUTHORIZED


async def test_sockets_that_go_away_leave_nothing_in_the_expiry_schedule(
    open_socket, demo: Demo, token_time: MovableClock
) -> None:
    schedule = expiry_schedule()
    keys = [await token_issued(demo.alice.id, ttl_seconds=ttl) for ttl in (1, 5, 60, 3600)]
    sockets = [await _connected(open_socket, demo.alice, key) for key in keys]
    assert len(schedule) == 4
    await sockets[3].disconnect()  # the client leaves
    await _delete(keys[2])  # revoked
    assert await sockets[2].wait_closed(within=2) == WS_4401_UNAUTHORIZED
    token_time.advance(1)  # the first expires
    assert await sockets[0].wait_closed(within=3) == WS_4401_UNAUTHORIZED
    await async_wait_until(lambda: len(schedule) == 1, what="one socket left scheduled")
    await sockets[1].disconnect()
    assert len(schedule) == 0
    assert len(authority_watch) == 0


async def test_an_expired_token_is_refused_at_the_handshake(open_socket, demo: Demo) -> None:
    key = await token_issued(demo.alice.id, ttl_seconds=-1)
    socket = await open_socket(demo.alice, token=key)
    assert await socket.wait_closed() == WS_4401_UNAUTHORIZED
    assert socket.frames == []


async def test_the_recheck_catches_what_no_signal_announced(
    open_socket, demo: Demo, realtime_override
) -> None:
    realtime_override(TOKEN_RECHECK_SECONDS=0.2)
    socket = await _connected(open_socket, demo.carol, demo.carol.token)
    # QuerySet.update sends no signal: as if the revocation had been lost with Redis down.
    await get_user_model().objects.filter(pk=demo.carol.id).aupdate(is_active=False)
    assert await socket.wait_closed(within=3) == WS_4401_UNAUTHORIZED
    assert len(authority_watch) == 0


async def test_an_auth_frame_swaps_to_a_fresh_token(
    open_socket, demo: Demo, token_time: MovableClock
) -> None:
    old_key = await token_issued(demo.alice.id, ttl_seconds=1.5)
    socket = await _connected(open_socket, demo.alice, old_key)
    new_key = await token_issued(demo.alice.id)
    ack = await socket.request({"type": "auth", "token": new_key})
    assert ack["type"] == "ack"
    assert ack["user_id"] == demo.alice.id and ack["expires_at"]
    # The old token's expiry and revocation no longer concern this socket ...
    await _delete(old_key)
    token_time.advance(1.6)  # past the old token's expiry
    await _after_what_was_sent(socket, demo.alice.id)  # the old token's revocation included
    assert (await socket.request({"type": "ping"}))["type"] == "pong"
    # ... the new one's do.
    await _delete(new_key)
    assert await socket.wait_closed(within=2) == WS_4401_UNAUTHORIZED


@pytest.mark.parametrize("which", ["unknown", "expired", "other_user", "missing"])
async def test_a_bad_auth_frame_is_invalid_payload_and_keeps_the_socket(
    open_socket, demo: Demo, which: str
) -> None:
    socket = await _connected(open_socket, demo.alice, demo.alice.token)
    frame: dict[str, object] = {"type": "auth"}
    if which == "unknown":
        frame["token"] = "no-such-token"
    elif which == "expired":
        frame["token"] = await token_issued(demo.alice.id, ttl_seconds=-1)
    elif which == "other_user":
        frame["token"] = demo.bob.token
    error = await socket.request(frame)
    assert (error["type"], error["code"]) == ("error", "invalid_payload")
    assert (await socket.request({"type": "ping"}))["type"] == "pong"
    # Still bound to its first token.
    await _delete(demo.alice.token)
    assert await socket.wait_closed(within=2) == WS_4401_UNAUTHORIZED
