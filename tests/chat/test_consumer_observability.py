"""What the consumer tells operators: metrics by code, and refusals while draining."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest

from connections import lifecycle
from health import metrics
from realtime_project.close_codes import WS_1012_SERVICE_RESTART
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.consumer_fixtures import Demo
from tests.support.ws_client import frame_is

pytestmark = pytest.mark.django_db(transaction=True)


def _sample(name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return float(value or 0.0)


@pytest.fixture
def draining() -> Iterator[None]:
    lifecycle.drain_begin()
    yield
    lifecycle.drain_reset()


async def test_frame_errors_are_counted_by_code(open_socket, demo: Demo) -> None:
    before = _sample("realtime_frame_errors_total", code="invalid_json")
    socket = await open_socket(demo.alice)
    await socket.recv_until(frame_is("connected"))
    await socket.send("{not json")
    await socket.recv_until(frame_is("error", code="invalid_json"))
    assert _sample("realtime_frame_errors_total", code="invalid_json") == before + 1
    assert b"realtime_frame_errors_total" in generate_latest(metrics.registry)


async def test_refused_sockets_are_counted_by_close_code(open_socket, demo: Demo) -> None:
    before = _sample("realtime_connections_rejected_total", code="4401")
    socket = await open_socket(None, token="not-a-token")
    assert await socket.wait_closed() == 4401
    assert _sample("realtime_connections_rejected_total", code="4401") == before + 1


async def test_a_draining_instance_sends_new_sockets_elsewhere(
    open_socket, demo: Demo, draining: None
) -> None:
    socket = await open_socket(demo.alice)
    assert await socket.wait_closed() == WS_1012_SERVICE_RESTART
