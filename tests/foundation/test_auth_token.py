"""POST /api/auth/token exchanges credentials for the user's API token."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password="demo-password")


@pytest.mark.parametrize("path", ["/api/auth/token", "/api/auth/token/"])
def test_good_credentials_return_the_users_token(alice: User, path: str) -> None:
    response = APIClient().post(
        path, {"username": "alice", "password": "demo-password"}, format="json"
    )
    assert response.status_code == 200
    assert response.json() == {"token": Token.objects.get(user=alice).key}


def test_same_token_every_time(alice: User) -> None:
    client = APIClient()
    body = {"username": "alice", "password": "demo-password"}
    first = client.post("/api/auth/token", body, format="json").json()["token"]
    second = client.post("/api/auth/token", body, format="json").json()["token"]
    assert first == second


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
    response = APIClient().post(
        "/api/auth/token", {"username": "alice", "password": "demo-password"}, format="json"
    )
    assert response.status_code == 400


def test_admin_login_page_is_served() -> None:
    response = APIClient().get("/admin/login/")
    assert response.status_code == 200
    assert b"Django administration" in response.content
