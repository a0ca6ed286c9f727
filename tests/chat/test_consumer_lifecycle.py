"""The socket lifecycle in-process: handshake, authentication, limits, registration."""

from __future__ import annotations

import pytest

from connections.close_codes import WS_4401_UNAUTHORIZED, WS_4403_FORBIDDEN, WS_4429_TOO_MANY
from connections.instance import instance_id
from connections.registry import get_registry
from connections.sockets import local_sockets
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.consumer_fixtures import Demo
from tests.support.ws_client import frame_is

pytestmark = pytest.mark.django_db(transaction=True)


async def test_connected_is_the_first_frame(open_socket, demo: Demo, realtime_override) -> None:
    realtime_override(HEARTBEAT_INTERVAL_SECONDS=7)
    socket = await open_socket(demo.alice)
    assert socket.accepted
    connected = await socket.recv()
    assert connected["type"] == "connected"
    assert connected["user_id"] == demo.alice.id
    assert connected["instance_id"] == instance_id()
    assert connected["heartbeat_interval"] == 7
    assert connected["connection_id"] and connected["event_id"] and connected["ts"]
    infos = await get_registry().user_connections(demo.alice.id)
    assert [info.connection_id for info in infos] == [connected["connection_id"]]


@pytest.mark.parametrize("token", ["not-a-token", ""])
async def test_bad_token_is_accepted_then_closed_4401(open_socket, demo: Demo, token) -> None:
    socket = await open_socket(None, token=token)
    assert socket.accepted
    assert await socket.wait_closed() == WS_4401_UNAUTHORIZED
    assert socket.frames == []


async def test_missing_token_closes_4401(open_socket, demo: Demo) -> None:
    socket = await open_socket(None)
    assert await socket.wait_closed() == WS_4401_UNAUTHORIZED


async def test_user_id_of_someone_else_closes_4403(open_socket, demo: Demo) -> None:
    socket = await open_socket(demo.alice, user_id=demo.bob.id)
    assert socket.accepted
    assert await socket.wait_closed() == WS_4403_FORBIDDEN
    assert await get_registry().user_connection_count(demo.alice.id) == 0


async def test_matching_user_id_is_welcome(open_socket, demo: Demo) -> None:
    socket = await open_socket(demo.alice, user_id=demo.alice.id)
    assert (await socket.recv())["type"] == "connected"


async def test_foreign_origin_is_refused_at_the_handshake(open_socket, demo: Demo) -> None:
    socket = await open_socket(demo.alice, headers=[(b"origin", b"https://evil.example")])
    assert not socket.accepted


async def test_allowed_origin_and_no_origin_are_judged_by_token(open_socket, demo: Demo) -> None:
    browser = await open_socket(demo.alice, headers=[(b"origin", b"http://localhost:8000")])
    assert (await browser.recv())["type"] == "connected"
    service = await open_socket(demo.bob, headers=[])
    assert (await service.recv())["type"] == "connected"


async def test_socket_beyond_the_per_user_limit_closes_4429(
    open_socket, demo: Demo, realtime_override
) -> None:
    realtime_override(MAX_SOCKETS_PER_USER=2)
    first = await open_socket(demo.alice)
    second = await open_socket(demo.alice)
    for socket in (first, second):
        assert (await socket.recv())["type"] == "connected"
    third = await open_socket(demo.alice)
    assert third.accepted
    assert await third.wait_closed() == WS_4429_TOO_MANY
    # Bob has his own quota, and alice's first sockets are untouched.
    bob = await open_socket(demo.bob)
    assert (await bob.recv())["type"] == "connected"
    assert (await first.request({"type": "ping"}))["type"] == "pong"


async def test_disconnect_unregisters_and_leaves_local_sockets(open_socket, demo: Demo) -> None:
    before = local_sockets.count()
    socket = await open_socket(demo.alice)
    await socket.recv_until(frame_is("connected"))
    assert local_sockets.count() == before + 1
    assert await get_registry().user_connection_count(demo.alice.id) == 1
    await socket.disconnect()
    assert local_sockets.count() == before
    assert await get_registry().user_connection_count(demo.alice.id) == 0
