"""POST /api/user/status, GET /api/users/status and GET /api/connections/info."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from asgiref.sync import async_to_sync

from connections.control import user_group
from connections.registry import get_registry, reset_registry
from presence.services import reset_presence
from presence.store import reset_store


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    for reset in (reset_presence, reset_store, reset_registry):
        reset()
    yield
    for reset in (reset_presence, reset_store, reset_registry):
        reset()


def test_set_status_answers_the_contract_shape(client_for, alice) -> None:
    response = client_for(alice).post("/api/user/status", {"status": "busy"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"user_id", "status", "updated_at"}
    assert body["user_id"] == str(alice.pk)
    assert body["status"] == "busy"
    assert datetime.fromisoformat(body["updated_at"]).utcoffset() is not None


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"status": "sleeping"},
        {"status": 1},
        {"status": None},
        {"status": "away", "x": 1},
        ["away"],
    ],
)
def test_set_status_refuses_bad_input(client_for, alice, payload) -> None:
    client = client_for(alice)
    assert client.post("/api/user/status", payload, format="json").status_code == 400
    # Nothing changed: the user is still as they were (never seen: offline).
    body = client.get(f"/api/users/status?ids={alice.pk}").json()
    assert body["users"][0]["status"] == "offline"


def test_a_rest_status_change_reaches_the_users_own_sockets(client_for, alice, listen) -> None:
    listener = listen(user_group(alice.pk))
    client_for(alice).post("/api/user/status", {"status": "away"}, format="json")
    event = listener.receive()["event"]
    assert event["type"] == "presence"
    assert event["user_id"] == str(alice.pk)
    assert event["status"] == "away"


def test_users_status_shows_self_and_peers_and_silently_omits_strangers(
    client_for, alice, bob, carol, alice_bob
) -> None:
    client_for(bob).post("/api/user/status", {"status": "busy"}, format="json")
    client_for(carol).post("/api/user/status", {"status": "online"}, format="json")
    ids = f"{carol.pk},{bob.pk},{alice.pk},999999,{bob.pk}"
    response = client_for(alice).get(f"/api/users/status?ids={ids}")
    assert response.status_code == 200
    users = response.json()["users"]
    assert [u["user_id"] for u in users] == [str(bob.pk), str(alice.pk)]
    assert users[0]["status"] == "busy"
    assert set(users[0]) == {"user_id", "status", "last_seen"}


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?ids=",
        "?ids=a,b",
        "?ids=1,,2",
        "?ids=-1",
        "?ids=" + ",".join(str(i) for i in range(1, 102)),
    ],
)
def test_users_status_refuses_missing_malformed_or_too_many_ids(client_for, alice, query) -> None:
    response = client_for(alice).get(f"/api/users/status{query}")
    assert response.status_code == 400
    assert "ids" in response.json()


def test_connections_info_lists_the_callers_sockets(client_for, alice, bob) -> None:
    registry = get_registry()
    async_to_sync(registry.register)(
        connection_id="c1", user_id=str(alice.pk), metadata={"user_agent": "pytest"}
    )
    async_to_sync(registry.register)(connection_id="c2", user_id=str(bob.pk), metadata={})
    client_for(alice).post("/api/user/status", {"status": "away"}, format="json")
    body = client_for(alice).get("/api/connections/info").json()
    assert body["user_id"] == str(alice.pk)
    assert body["status"] == "away"
    assert body["connection_count"] == 1
    [connection] = body["connections"]
    assert set(connection) == {
        "connection_id",
        "instance_id",
        "connected_at",
        "last_seen",
        "expires_at",
        "metadata",
    }
    assert connection["connection_id"] == "c1"
    assert connection["metadata"] == {"user_agent": "pytest"}


def test_presence_endpoints_need_credentials(anon) -> None:
    assert anon.post("/api/user/status", {"status": "away"}, format="json").status_code == 401
    assert anon.get("/api/users/status?ids=1").status_code == 401
    assert anon.get("/api/connections/info").status_code == 401
