"""``GET /metrics``: Prometheus text for METRICS_TOKEN or staff, or open when set so."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient
from prometheus_client.parser import text_string_to_metric_families

from accounts.tokens import token_issue
from chat import metrics as chat_metrics
from connections import metrics as connections_metrics
from health import metrics

pytestmark = pytest.mark.django_db(transaction=True)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


SCRAPE_TOKEN = "scrape-secret-0123456789"


@pytest.fixture(autouse=True)
def scrape_token(realtime) -> None:
    realtime(METRICS_TOKEN=SCRAPE_TOKEN)


async def _scrape(**headers: str) -> dict:
    headers = {"authorization": f"Bearer {SCRAPE_TOKEN}", **headers}
    response = await AsyncClient().get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return _samples(response.content.decode())


async def test_exports_connections_layer_state_and_consumer_counts() -> None:
    before = await _scrape()
    connections_metrics.connection_opened()
    connections_metrics.connection_closed(1000)
    connections_metrics.connection_rejected(4401)
    chat_metrics.frame_error("invalid_json")
    chat_metrics.frame_error("invalid_json")
    after = await _scrape()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("realtime_connections_opened_total") == 1
    assert delta("realtime_connections_closed_total", code="1000") == 1
    assert delta("realtime_connections_rejected_total", code="4401") == 1
    assert delta("realtime_frame_errors_total", code="invalid_json") == 2
    assert after[("realtime_connections", ())] == 0
    assert after[("realtime_connections_global", ())] == 0
    assert after[("realtime_layer_status", (("status", "local"),))] == 1
    for name in ("published", "echoes_dropped", "duplicates_dropped", "redis_errors"):
        assert (f"realtime_{name}_total", ()) in after or (
            f"realtime_events_{name}_total",
            (),
        ) in after, name
    assert ("realtime_events_delivered_total", (("path", "local"),)) in after
    assert ("realtime_events_delivered_total", (("path", "remote"),)) in after
    assert ("realtime_degraded_seconds_total", ()) in after
    assert ("realtime_presence_writes", ()) in after


async def test_an_anonymous_scrape_is_refused_by_default() -> None:
    response = await AsyncClient().get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    wrong = await AsyncClient().get("/metrics", headers={"authorization": "Bearer guess"})
    assert wrong.status_code == 403


async def test_open_only_when_set_explicitly(realtime) -> None:
    realtime(METRICS_ACCESS="open")
    assert (await AsyncClient().get("/metrics")).status_code == 200


async def test_staff_users_may_scrape_with_a_session_or_their_token(realtime) -> None:
    realtime(METRICS_TOKEN=None)
    user_model = get_user_model()
    staff = await user_model.objects.acreate(username="ops", is_staff=True)
    plain = await user_model.objects.acreate(username="someone")
    staff_key = (await sync_to_async(token_issue)(user=staff)).key
    plain_key = (await sync_to_async(token_issue)(user=plain)).key
    denied = await AsyncClient().get("/metrics", headers={"authorization": f"Token {plain_key}"})
    assert denied.status_code == 403
    allowed = await AsyncClient().get("/metrics", headers={"authorization": f"Token {staff_key}"})
    assert allowed.status_code == 200
    assert b"realtime_connections " in allowed.content
    browser = AsyncClient()
    await browser.aforce_login(staff)
    assert (await browser.get("/metrics")).status_code == 200
    await browser.aforce_login(plain)
    assert (await browser.get("/metrics")).status_code == 403


async def test_scrapes_share_one_registry_snapshot(realtime, monkeypatch) -> None:
    from health import views

    realtime(METRICS_CACHE_SECONDS=60)
    calls = 0
    real = views._snapshot

    async def counted() -> metrics.ScrapeSnapshot:
        nonlocal calls
        calls += 1
        return await real()

    monkeypatch.setattr(views, "_snapshot", counted)
    await asyncio.gather(*(_scrape() for _ in range(5)))
    await _scrape()
    assert calls == 1
