"""POST /api/auth/token issues an expiring token; POST /api/auth/logout revokes it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import AuthToken, token_digest

pytestmark = pytest.mark.django_db

GOOD = {"username": "alice", "password": "demo-password"}


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password="demo-password")


def _login(client: APIClient | None = None, body: dict[str, str] = GOOD) -> Any:
    return (client or APIClient()).post("/api/auth/token", body, format="json")


def _authed(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.mark.parametrize("path", ["/api/auth/token", "/api/auth/token/"])
def test_good_credentials_return_a_token_and_its_expiry(alice: User, path: str, settings) -> None:
    before = timezone.now()
    response = APIClient().post(path, GOOD, format="json")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "expires_at"}
    stored = AuthToken.objects.get(user=alice)
    # Only a digest is kept, never the key itself.
    assert stored.digest == token_digest(body["token"]) != body["token"]
    expires_at = datetime.fromisoformat(body["expires_at"])
    ttl = timedelta(seconds=settings.REALTIME["TOKEN_TTL_SECONDS"])
    assert before + ttl <= expires_at <= timezone.now() + ttl
    assert ttl == timedelta(days=30)
    assert _authed(body["token"]).get("/api/conversations").status_code == 200


def test_each_login_is_a_token_of_its_own(alice: User) -> None:
    first = _login().json()["token"]
    second = _login().json()["token"]
    assert first != second
    # Logging out one device leaves the other signed in.
    assert _authed(first).post("/api/auth/logout").status_code == 204
    assert _authed(first).get("/api/conversations").status_code == 401
    assert _authed(second).get("/api/conversations").status_code == 200


def test_an_expired_token_is_401_and_pruned_at_the_next_login(alice: User) -> None:
    key = _login().json()["token"]
    AuthToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = _authed(key).get("/api/conversations")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    _login()
    assert AuthToken.objects.filter(user=alice).count() == 1


def test_a_deactivated_users_token_is_401(alice: User) -> None:
    key = _login().json()["token"]
    alice.is_active = False
    alice.save()
    assert _authed(key).get("/api/conversations").status_code == 401


def test_logout_needs_credentials() -> None:
    assert APIClient().post("/api/auth/logout").status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"username": "alice", "password": "wrong"},
        {"username": "nobody", "password": "demo-password"},
        {"username": "alice"},
        {},
    ],
)
def test_bad_credentials_are_400(alice: User, body: dict[str, str]) -> None:
    response = APIClient().post("/api/auth/token", body, format="json")
    assert response.status_code == 400
    assert "token" not in response.json()


def test_inactive_user_gets_no_token(alice: User) -> None:
    alice.is_active = False
    alice.save()
    assert _login().status_code == 400


def test_the_eleventh_failure_within_a_minute_is_429_even_with_the_right_password(
    alice: User,
) -> None:
    wrong = {"username": "alice", "password": "wrong"}
    for _ in range(10):
        assert _login(body=wrong).status_code == 400
    response = _login()
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    # Another username from the same address is not locked out by alice's failures.
    User.objects.create_user("bob", password="demo-password")
    assert _login(body={"username": "bob", "password": "demo-password"}).status_code == 200


def test_successful_logins_do_not_count_as_failures(alice: User) -> None:
    for _ in range(12):
        assert _login().status_code == 200


def test_failures_per_address_are_limited_too(alice: User, settings) -> None:
    settings.REALTIME = {**settings.REALTIME, "AUTH_FAILURES_PER_ADDRESS_PER_MINUTE": 3}
    for name in ("u1", "u2", "u3"):
        assert _login(body={"username": name, "password": "x"}).status_code == 400
    assert _login(body={"username": "u4", "password": "x"}).status_code == 429


def test_rest_writes_are_throttled_per_user_at_the_frame_rate(alice: User, settings) -> None:
    settings.REALTIME = {
        **settings.REALTIME,
        "RATE_LIMIT_BURST": 5,
        "RATE_LIMIT_FRAMES_PER_SECOND": 0.1,  # a 50 s window: the test cannot straddle two
    }
    client = _authed(_login().json()["token"])
    statuses = [
        client.post("/api/user/status", {"status": "away"}, format="json").status_code
        for _ in range(6)
    ]
    assert statuses[:5] == [200] * 5
    assert statuses[5] == 429
    # Reads are not writes.
    assert client.get("/api/conversations").status_code == 200


def test_admin_login_page_is_served() -> None:
    response = APIClient().get("/admin/login/")
    assert response.status_code == 200
    assert b"Django administration" in response.content
