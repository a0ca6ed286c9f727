"""``GET /api/health`` as a load balancer sees it."""

from __future__ import annotations

import json
import time

import pytest
from django.test import AsyncClient

from connections.lifecycle import drain_begin
from health import checks
from scripts.procs import free_port

pytestmark = pytest.mark.django_db(transaction=True)


async def test_embedded_default_is_healthy_with_dependencies_disabled() -> None:
    for path in ("/api/health", "/api/health/"):
        response = await AsyncClient().get(path)
        assert response.status_code == 200, path
        body = response.json()
        assert body["status"] == "healthy"
        assert body["checks"]["redis"] == {"status": "disabled"}
        assert body["checks"]["firestore"] == {"status": "disabled"}
        assert body["checks"]["database"]["status"] == "up"
        assert body["checks"]["database"]["latency_ms"] >= 0
        assert body["connections"] == 0
        assert body["instance_id"]


async def test_answers_without_credentials_and_reveals_no_configuration(realtime) -> None:
    realtime(REDIS_URL="redis://:s3cret-pass@127.0.0.1:1/0", HEALTH_TIMEOUT_SECONDS=0.3)
    response = await AsyncClient().get("/api/health", headers={"authorization": "Token bogus"})
    assert response.status_code == 200
    assert b"s3cret-pass" not in response.content
    assert b"127.0.0.1:1" not in response.content


async def test_redis_refusing_connections_is_degraded_not_down(realtime) -> None:
    realtime(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", HEALTH_TIMEOUT_SECONDS=0.3)
    response = await AsyncClient().get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"]["status"] == "down"
    assert body["checks"]["database"]["status"] == "up"


async def test_a_hung_redis_does_not_hang_the_probe(realtime, hung_port: int) -> None:
    realtime(
        REDIS_URL=f"redis://127.0.0.1:{hung_port}/0",
        HEALTH_TIMEOUT_SECONDS=0.3,
        REDIS_SOCKET_TIMEOUT_SECONDS=30,
        REDIS_CONNECT_TIMEOUT_SECONDS=30,
    )
    started = time.monotonic()
    response = await AsyncClient().get("/api/health")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["checks"]["redis"]["status"] == "down"
    assert elapsed < 1.5, f"health took {elapsed:.2f}s with a hung Redis"


async def test_a_hung_firestore_does_not_hang_the_probe(realtime, hung_port, monkeypatch) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{hung_port}")
    realtime(FIRESTORE_PROJECT_ID="demo-health", HEALTH_TIMEOUT_SECONDS=0.3, HEALTH_CACHE_SECONDS=0)
    await AsyncClient().get("/api/health")  # the first one also imports the Firestore SDK
    started = time.monotonic()
    response = await AsyncClient().get("/api/health")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["firestore"]["status"] == "down"
    assert elapsed < 1.5, f"health took {elapsed:.2f}s with a hung Firestore"


async def test_database_down_is_unhealthy(monkeypatch) -> None:
    def broken() -> None:
        raise ConnectionError("database unreachable")

    monkeypatch.setattr(checks, "_db_round_trip", broken)
    response = await AsyncClient().get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["checks"]["database"]["status"] == "down"


async def test_a_hung_database_is_unhealthy_within_the_timeout(realtime, monkeypatch) -> None:
    import threading

    release = threading.Event()
    monkeypatch.setattr(checks, "_db_round_trip", lambda: release.wait(5))
    realtime(HEALTH_TIMEOUT_SECONDS=0.2, HEALTH_CACHE_SECONDS=0)
    try:
        started = time.monotonic()
        first = await AsyncClient().get("/api/health")
        # A second probe while the first is stuck answers at once, without a second thread.
        second = await AsyncClient().get("/api/health")
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert (first.status_code, second.status_code) == (503, 503)
    assert elapsed < 1.0


async def test_draining_answers_503_at_once() -> None:
    assert (await AsyncClient().get("/api/health")).status_code == 200
    drain_begin()
    response = await AsyncClient().get("/api/health")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert response.json()["draining"] is True


async def test_one_evaluation_serves_every_probe_within_the_cache_window(
    realtime, monkeypatch
) -> None:
    calls = 0
    real = checks.check_database

    async def counted(**kwargs):
        nonlocal calls
        calls += 1
        return await real(**kwargs)

    monkeypatch.setattr(checks, "check_database", counted)
    realtime(HEALTH_CACHE_SECONDS=60)
    for _ in range(5):
        assert (await AsyncClient().get("/api/health")).status_code == 200
    assert calls == 1


async def test_the_asgi_front_answers_the_probe_before_django() -> None:
    from health.asgi import health_router

    passed_on: list[str] = []

    async def django_app(scope, receive, send) -> None:
        passed_on.append(scope["path"])

    sent: list[dict] = []

    async def send(message) -> None:
        sent.append(dict(message))

    async def receive() -> dict:
        return {"type": "http.request"}

    app = health_router(django_app)
    for path in ("/api/health", "/api/health/"):
        await app({"type": "http", "path": path, "method": "GET"}, receive, send)
    await app({"type": "http", "path": "/api/users/status", "method": "GET"}, receive, send)
    assert passed_on == ["/api/users/status"]
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [200, 200]
    body = json.loads(sent[1]["body"])
    assert body["status"] == "healthy" and body["checks"]["database"]["status"] == "up"


async def _health(**headers: str) -> dict:
    response = await AsyncClient().get("/api/health", headers=headers)
    assert response.status_code == 200
    return response.json()


async def test_anonymous_callers_see_each_checks_status_but_no_topology(realtime) -> None:
    realtime(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", HEALTH_TIMEOUT_SECONDS=0.3)
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Token bogus"}):
        body = await _health(**headers)
        assert set(body) == {"status", "instance_id", "checks", "connections"}
        assert set(body["checks"]) == {"redis", "firestore", "database"}
        assert set(body["checks"]["redis"]) == {"status", "latency_ms"}
        assert body["checks"]["redis"]["status"] == "down"


async def test_the_metrics_token_and_staff_see_the_details(realtime, settings) -> None:
    realtime(
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        HEALTH_TIMEOUT_SECONDS=0.3,
        METRICS_TOKEN="scrape-secret",
    )
    body = await _health(authorization="Bearer scrape-secret")
    assert body["checks"]["redis"]["topology"] == "single"
    assert body["checks"]["redis"]["nodes"] == {"node-1": "down"}
    from asgiref.sync import sync_to_async
    from django.contrib.auth import get_user_model

    staff = await sync_to_async(get_user_model().objects.create_user)(
        username="ops", password=None, is_staff=True
    )
    client = AsyncClient()
    await client.aforce_login(staff)
    response = await client.get("/api/health")
    assert response.json()["checks"]["redis"]["topology"] == "single"


async def test_the_asgi_front_answers_anonymous_probes_with_the_public_body(realtime) -> None:
    from health.asgi import health_router

    realtime(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", HEALTH_TIMEOUT_SECONDS=0.3)
    passed_on: list[str] = []

    async def django_app(scope, receive, send) -> None:
        passed_on.append(scope["path"])

    sent: list[dict] = []

    async def send(message) -> None:
        sent.append(dict(message))

    async def receive() -> dict:
        return {"type": "http.request"}

    app = health_router(django_app)
    await app(
        {"type": "http", "path": "/api/health", "method": "GET", "headers": []}, receive, send
    )
    body = json.loads(sent[1]["body"])
    assert set(body["checks"]["redis"]) == {"status", "latency_ms"}
    # Credentials go on to Django's view, which decides what they may see.
    scope = {"type": "http", "path": "/api/health", "method": "GET"}
    await app({**scope, "headers": [(b"authorization", b"Bearer x")]}, receive, send)
    await app({**scope, "headers": [(b"cookie", b"sessionid=x")]}, receive, send)
    assert passed_on == ["/api/health", "/api/health"]
