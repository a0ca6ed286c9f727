"""A socket's authority follows its token across two real Daphne instances on one Redis.

Logout, deactivation (saved, or a bulk update no signal announces), a password change, a
flushed session and expiry each close the user's live socket on the other instance with 4401
within 2 s, and nothing of theirs is acked after; so does a logout made while Redis is down,
which the other instance cannot hear; the login throttle counts failures in the shared Redis
cache, so the 11th wrong password gets 429 on either instance.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from realtime_project.close_codes import WS_4401_UNAUTHORIZED
from scripts.deployment import Cluster
from scripts.procs import DaphneInstance, manage
from tests.ops.support import wait_health
from tests.support.cluster import E2E_ENV
from tests.support.services import service_running
from tests.support.ws_client import WsClient, frame_is

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

PASSWORD = "demo-password"
REVOKE_WITHIN_SECONDS = 2.0


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two instances over one Redis; presence on the embedded store (not what is tested)."""
    cluster = Cluster(
        instances=2,
        state_dir=tmp_path_factory.mktemp("authority"),
        env=E2E_ENV,
        with_firestore=False,
        database_url=os.environ.get("DATABASE_URL"),
    )
    with service_running(cluster):
        yield cluster


def _call(
    on: DaphneInstance, method: str, path: str, *, token: str | None = None, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    request = urllib.request.Request(
        f"{on.base_url}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return (
                int(response.status),
                dict(response.headers),
                json.loads(response.read() or b"null"),
            )
    except urllib.error.HTTPError as exc:
        return int(exc.code), dict(exc.headers), json.loads(exc.read() or b"null")


def _login(on: DaphneInstance, username: str, password: str = PASSWORD) -> tuple[int, dict, Any]:
    return _call(on, "POST", "/api/auth/token", body={"username": username, "password": password})


def _token(on: DaphneInstance, username: str) -> str:
    status, _, body = _login(on, username)
    assert status == 200, body
    return str(body["token"])


def _shell(cluster: Cluster, code: str) -> None:
    """Change the cluster's database as an operator would (``manage.py shell``)."""
    manage("shell", "-c", code, env=cluster.instance_env())


async def _socket(on: DaphneInstance, token: str) -> WsClient:
    client = await WsClient.open(on.ws_url, token=token)
    await client.recv_until(frame_is("connected"))
    return client


async def _closed_within(client: WsClient, seconds: float) -> tuple[int | None, float]:
    started = time.monotonic()
    code = await client.wait_closed(within=seconds + 1)
    return code, time.monotonic() - started


async def test_logout_closes_the_socket_on_the_other_instance(pair: Cluster) -> None:
    a, b = pair.instances
    conversation = pair.demo["conversations"]["alice-bob"]["id"]
    token = await asyncio.to_thread(_token, a, "bob")
    bob = await _socket(b, token)
    alice = await _socket(a, pair.demo["users"]["alice"]["token"])
    try:
        status, _, _ = await asyncio.to_thread(_call, a, "POST", "/api/auth/logout", token=token)
        assert status == 204
        code, took = await _closed_within(bob, REVOKE_WITHIN_SECONDS)
        assert code == WS_4401_UNAUTHORIZED
        assert took <= REVOKE_WITHIN_SECONDS
        assert bob.unconsumed(frame_is("ack")) == []
        # The token is dead everywhere: REST and a new handshake on either instance.
        for instance in (a, b):
            status, _, _ = await asyncio.to_thread(
                _call, instance, "GET", "/api/conversations", token=token
            )
            assert status == 401
            again = await WsClient.open(instance.ws_url, token=token)
            assert await again.wait_closed() == WS_4401_UNAUTHORIZED
        # Alice, in the same conversation, was not touched.
        ack = await alice.request(
            {"type": "typing", "conversation_id": conversation, "is_typing": True}
        )
        assert ack["type"] == "ack"
    finally:
        await alice.close()


async def test_a_token_known_where_its_user_has_no_socket_left_is_refused_after_logout(
    pair: Cluster,
) -> None:
    """Instance B caches the token of a socket that has gone; logout on A reaches B's cache."""
    a, b = pair.instances
    token = await asyncio.to_thread(_token, a, "bob")
    for _ in range(2):  # the second handshake is served from B's cache
        socket = await _socket(b, token)
        await socket.close()
    status, _, _ = await asyncio.to_thread(_call, a, "POST", "/api/auth/logout", token=token)
    assert status == 204
    again = await WsClient.open(b.ws_url, token=token)
    assert await again.wait_closed() == WS_4401_UNAUTHORIZED


async def test_deactivation_closes_every_socket_on_both_instances(pair: Cluster) -> None:
    a, b = pair.instances
    token = await asyncio.to_thread(_token, a, "carol")
    sockets = [await _socket(a, token), await _socket(b, token)]
    deactivate = (
        "from django.contrib.auth.models import User; u = User.objects.get(username='carol'); "
        "u.is_active = False; u.save()"
    )
    try:
        await asyncio.to_thread(_shell, pair, deactivate)
        for socket in sockets:
            code, _ = await _closed_within(socket, REVOKE_WITHIN_SECONDS)
            assert code == WS_4401_UNAUTHORIZED
            assert socket.unconsumed(frame_is("ack")) == []
        again = await WsClient.open(b.ws_url, token=token)
        assert await again.wait_closed() == WS_4401_UNAUTHORIZED
    finally:
        await asyncio.to_thread(
            _shell,
            pair,
            "from django.contrib.auth.models import User; "
            "User.objects.filter(username='carol').update(is_active=True)",
        )


async def test_a_bulk_deactivation_closes_every_socket_on_both_instances(pair: Cluster) -> None:
    """``QuerySet.update`` sends no signal: each instance's sweep finds it in the database."""
    a, b = pair.instances
    token = await asyncio.to_thread(_token, a, "carol")
    sockets = [await _socket(a, token), await _socket(b, token)]
    users = "from django.contrib.auth.models import User; User.objects.filter(username='carol')"
    try:
        await asyncio.to_thread(_shell, pair, f"{users}.update(is_active=False)")
        for socket in sockets:
            code, _ = await _closed_within(socket, REVOKE_WITHIN_SECONDS)
            assert code == WS_4401_UNAUTHORIZED
    finally:
        await asyncio.to_thread(_shell, pair, f"{users}.update(is_active=True)")


async def test_a_password_change_closes_every_socket_and_kills_every_token(pair: Cluster) -> None:
    a, b = pair.instances
    tokens = [await asyncio.to_thread(_token, a, "bob"), await asyncio.to_thread(_token, b, "bob")]
    sockets = [
        await _socket(a, tokens[0]),
        await _socket(b, tokens[1]),
        await _socket(b, tokens[0]),
    ]
    change = (
        "from django.contrib.auth.models import User; u = User.objects.get(username='bob'); "
        "u.set_password({!r}); u.save()"
    )
    try:
        await asyncio.to_thread(_shell, pair, change.format("a-new-password"))
        for socket in sockets:
            code, _ = await _closed_within(socket, REVOKE_WITHIN_SECONDS)
            assert code == WS_4401_UNAUTHORIZED
        for token in tokens:
            for instance in (a, b):
                status, _, _ = await asyncio.to_thread(
                    _call, instance, "GET", "/api/conversations", token=token
                )
                assert status == 401
                again = await WsClient.open(instance.ws_url, token=token)
                assert await again.wait_closed() == WS_4401_UNAUTHORIZED
    finally:
        await asyncio.to_thread(_shell, pair, change.format(PASSWORD))


async def test_a_session_that_ends_closes_its_sockets_on_both_instances(pair: Cluster) -> None:
    a, b = pair.instances
    login = (
        "from django.conf import settings; from django.contrib import auth; "
        "from django.contrib.auth.models import User; "
        "from django.contrib.sessions.backends.db import SessionStore; "
        "u = User.objects.get(username='alice'); s = SessionStore(); "
        "s[auth.SESSION_KEY] = str(u.pk); "
        "s[auth.BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]; "
        "s[auth.HASH_SESSION_KEY] = u.get_session_auth_hash(); s.create(); print(s.session_key)"
    )
    doomed_key, kept_key = [
        (await asyncio.to_thread(manage, "shell", "-c", login, env=pair.instance_env())).split()[-1]
        for _ in range(2)
    ]
    doomed: list[WsClient] = []
    kept: list[WsClient] = []
    for instance in (a, b):
        for key, into in ((doomed_key, doomed), (kept_key, kept)):
            socket = await WsClient.open(instance.ws_url, token=None, cookie=f"sessionid={key}")
            await socket.recv_until(frame_is("connected"))
            into.append(socket)
    try:
        # Logout ends the session the same way (``logout()`` flushes it).
        flush = (
            "from django.contrib.sessions.backends.db import SessionStore; "
            f"SessionStore(session_key={doomed_key!r}).flush()"
        )
        await asyncio.to_thread(_shell, pair, flush)
        for socket in doomed:
            code, _ = await _closed_within(socket, REVOKE_WITHIN_SECONDS)
            assert code == WS_4401_UNAUTHORIZED
        for socket in kept:
            assert (await socket.request({"type": "ping"}))["type"] == "pong"
    finally:
        for socket in kept:
            await socket.close()


async def test_a_token_expiring_while_its_socket_is_open_closes_it(pair: Cluster) -> None:
    a, b = pair.instances
    token = await asyncio.to_thread(_token, a, "alice")
    # The token is made to expire 3 s from now, then a socket opens with it on instance B.
    await asyncio.to_thread(
        _shell,
        pair,
        "from datetime import timedelta; from django.utils import timezone; "
        "from accounts.models import AuthToken, token_digest; "
        f"AuthToken.objects.filter(digest=token_digest({token!r}))"
        ".update(expires_at=timezone.now() + timedelta(seconds=3))",
    )
    socket = await _socket(b, token)
    assert (await socket.request({"type": "ping"}))["type"] == "pong"
    code = await socket.wait_closed(within=3 + REVOKE_WITHIN_SECONDS + 1)
    assert code == WS_4401_UNAUTHORIZED
    status, _, _ = await asyncio.to_thread(_call, a, "GET", "/api/conversations", token=token)
    assert status == 401


def test_the_eleventh_wrong_password_is_429_on_either_instance(pair: Cluster) -> None:
    a, b = pair.instances
    # Ten failures spread over both instances, two at a time.
    with ThreadPoolExecutor(max_workers=2) as pool:
        statuses = list(pool.map(lambda i: _login((a, b)[i % 2], "admin", "wrong")[0], range(10)))
    assert statuses == [400] * 10
    for instance in (a, b):
        status, headers, _ = _login(instance, "admin")  # even the right password now
        assert status == 429
        assert 1 <= int(headers["Retry-After"]) <= 60
    # Another user is not locked out.
    assert _login(b, "alice")[0] == 200


async def test_a_logout_while_redis_is_down_is_honoured_on_the_other_instance(
    pair: Cluster,
) -> None:
    """Stops the module's Redis, and starts it again (empty) before it returns."""
    a, b = pair.instances
    token = await asyncio.to_thread(_token, a, "carol")
    warm = await _socket(b, token)  # B now holds the token in its cache
    await warm.close()
    live = await _socket(b, token)
    try:
        await asyncio.to_thread(pair.redis.stop, 5)
        await wait_health([a, b], "degraded", within=15, interval=0.1)
        status, _, _ = await asyncio.to_thread(_call, a, "POST", "/api/auth/logout", token=token)
        assert status == 204  # its revocation is published to nobody
        code, took = await _closed_within(live, REVOKE_WITHIN_SECONDS)
        assert code == WS_4401_UNAUTHORIZED
        assert took <= REVOKE_WITHIN_SECONDS
        again = await WsClient.open(b.ws_url, token=token)
        assert await again.wait_closed() == WS_4401_UNAUTHORIZED
        assert again.frames == []
        status, _, _ = await asyncio.to_thread(_call, b, "GET", "/api/conversations", token=token)
        assert status == 401
    finally:
        await asyncio.to_thread(pair.redis.start)
        await wait_health([a, b], "healthy", within=30, interval=0.2)
