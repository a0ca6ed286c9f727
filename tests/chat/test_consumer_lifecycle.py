"""The socket lifecycle in-process: handshake, authentication, limits, registration."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from connections.instance import instance_id
from connections.registry import get_registry
from connections.sockets import local_sockets
from realtime_project.close_codes import WS_4401_UNAUTHORIZED, WS_4403_FORBIDDEN, WS_4429_TOO_MANY
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


@pytest.fixture
def alice_session(demo: Demo) -> bytes:
    """A ``Cookie`` header carrying a signed-in session of alice."""
    browser = Client()
    browser.force_login(get_user_model().objects.get(pk=demo.alice.id))
    value = browser.cookies[settings.SESSION_COOKIE_NAME].value
    return f"{settings.SESSION_COOKIE_NAME}={value}".encode()


def _browser(cookie: bytes, origin: bytes) -> list[tuple[bytes, bytes]]:
    # The page is served by http://localhost:8000 (an allowed host, as every origin below).
    return [(b"host", b"localhost:8000"), (b"origin", origin), (b"cookie", cookie)]


@pytest.mark.parametrize(
    "origin",
    [b"http://localhost:9999", b"https://localhost:8000", b"http://127.0.0.1:8000"],
)
async def test_a_session_socket_from_another_origin_is_refused(
    open_socket, demo: Demo, alice_session: bytes, origin: bytes
) -> None:
    socket = await open_socket(None, headers=_browser(alice_session, origin))
    assert not socket.accepted
    assert await get_registry().user_connection_count(demo.alice.id) == 0


async def test_a_session_socket_from_its_own_or_a_trusted_origin_is_welcome(
    open_socket, demo: Demo, alice_session: bytes, settings
) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["http://127.0.0.1:3000"]
    for origin in (b"http://localhost:8000", b"http://127.0.0.1:3000"):
        socket = await open_socket(None, headers=_browser(alice_session, origin))
        connected = await socket.recv()
        assert (connected["type"], connected["user_id"]) == ("connected", demo.alice.id)
    # Without an Origin (no browser page) the cookie is judged alone.
    headers = [(b"host", b"localhost:8000"), (b"cookie", alice_session)]
    assert (await (await open_socket(None, headers=headers)).recv())["type"] == "connected"


async def test_a_token_socket_from_another_port_is_judged_by_its_token(
    open_socket, demo: Demo, alice_session: bytes
) -> None:
    socket = await open_socket(demo.bob, headers=_browser(alice_session, b"http://localhost:9999"))
    connected = await socket.recv()
    assert (connected["type"], connected["user_id"]) == ("connected", demo.bob.id)
