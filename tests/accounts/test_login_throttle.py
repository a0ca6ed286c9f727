"""The login throttle cannot be walked around: not by padding a name, not by Redis going down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from connections.topology import RedisTopology
from scripts.procs import RedisServer

pytestmark = pytest.mark.django_db

RIGHT = "demo-password"


@pytest.fixture
def bob() -> User:
    return User.objects.create_user("bob", password=RIGHT)


def _login(username: str, password: str, address: str = "10.0.0.1") -> Any:
    return APIClient(REMOTE_ADDR=address).post(
        "/api/auth/token", {"username": username, "password": password}, format="json"
    )


def _lock(username: str = "bob", address: str = "10.0.0.1") -> None:
    for _ in range(10):
        assert _login(username, "wrong", address).status_code == 400


@pytest.mark.parametrize(
    "variant", ["bob", " bob", "bob\u2003", "\u2003bob\u00a0", "\tbob\n", "\uff42\uff4f\uff42"]
)
def test_a_locked_name_stays_locked_however_it_is_padded_or_spelled(
    bob: User, variant: str
) -> None:
    _lock()
    response = _login(variant, RIGHT)
    assert response.status_code == 429
    assert "token" not in response.json()


def test_padded_variants_share_one_counter(bob: User) -> None:
    padded = ["bob", " bob", "bob ", "bob\u2003", "\u2003bob", "bob\u00a0", " bob\u2003", "\tbob"]
    for index in range(10):
        assert _login(padded[index % len(padded)], "wrong").status_code == 400
    assert _login("bob\u2003", RIGHT).status_code == 429
    assert _login("bob", RIGHT).status_code == 429


def test_a_padded_name_logs_in_as_the_user_it_names(bob: User) -> None:
    # The name is authenticated as it is counted: trimmed and NFKC-normalized.
    assert _login("bob\u2003", RIGHT).status_code == 200


def test_by_default_a_strangers_failures_lock_the_owner_out_too(bob: User) -> None:
    _lock(address="203.0.113.9")
    assert _login("bob", RIGHT, address="10.0.0.1").status_code == 429


def test_lockout_per_username_and_address_keeps_the_owner_in(bob: User, settings) -> None:
    settings.REALTIME = {**settings.REALTIME, "AUTH_LOCKOUT_SCOPE": "username_address"}
    _lock(address="203.0.113.9")
    assert _login("bob", RIGHT, address="203.0.113.9").status_code == 429
    assert _login("bob", RIGHT, address="10.0.0.1").status_code == 200


@pytest.fixture
def shared_cache(redis_factory: Callable[..., RedisServer], settings) -> RedisServer:
    """Throttle counters on a private Redis, which the test may stop."""
    server = redis_factory()
    settings.CACHES = {"default": RedisTopology.from_values(redis_url=server.url).cache_config()}
    return server


def test_with_redis_down_the_login_limit_holds_on_this_instance(
    bob: User, shared_cache: RedisServer
) -> None:
    assert _login("bob", RIGHT).status_code == 200
    shared_cache.stop()
    _lock()
    response = _login("bob", RIGHT)
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    # A good password still works for another name while Redis is down.
    User.objects.create_user("carol", password=RIGHT)
    assert _login("carol", RIGHT).status_code == 200


def test_with_redis_down_rest_writes_are_still_throttled(
    bob: User, shared_cache: RedisServer, settings
) -> None:
    settings.REALTIME = {
        **settings.REALTIME,
        "RATE_LIMIT_BURST": 5,
        "RATE_LIMIT_FRAMES_PER_SECOND": 0.1,  # a 50 s window: the test cannot straddle two
    }
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {_login('bob', RIGHT).json()['token']}")
    shared_cache.stop()
    statuses = [
        client.post("/api/user/status", {"status": "away"}, format="json").status_code
        for _ in range(6)
    ]
    assert statuses == [200] * 5 + [429]
