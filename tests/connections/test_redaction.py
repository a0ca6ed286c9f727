"""A Redis password never leaves the settings: not in names, logs, health or errors."""

from __future__ import annotations

import logging

import pytest

from connections.topology import RedisTopology
from realtime_layer import RealtimeChannelLayer
from realtime_layer.endpoints import RedisEndpoint, redacted_url
from scripts.procs import free_port
from tests.support.async_poll import async_wait_until

SECRET = "s3cret-pass"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{SECRET}@10.0.0.5:6379/0", "redis://***@10.0.0.5:6379/0"),
        (f"rediss://app:{SECRET}@[::1]:6380/2", "rediss://***@[::1]:6380/2"),
        (f"redis://10.0.0.5/0?password={SECRET}", "redis://***@10.0.0.5/0"),
        ("redis://10.0.0.5:6379/0", "redis://10.0.0.5:6379/0"),
    ],
)
def test_a_url_is_named_without_its_credentials(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
    assert RedisEndpoint.from_url(url).name == shown
    assert SECRET not in RedisTopology.from_values(redis_url=f"{url},{url}").describe()


def test_the_same_node_keeps_its_place_on_the_ring_when_the_password_changes() -> None:
    before = RedisEndpoint.from_url("redis://:old@10.0.0.5:6379/0")
    after = RedisEndpoint.from_url("redis://:new@10.0.0.5:6379/0")
    assert before.name == after.name
    assert after.password == "new"  # the connection still authenticates


async def test_a_lost_redis_is_logged_without_its_password(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    layer = RealtimeChannelLayer(hosts=[url])
    try:
        channel = await layer.new_channel()
        await layer.group_add("g", channel)
        await layer.group_send("g", {"type": "x"})
        await async_wait_until(
            lambda: "127.0.0.1" in caplog.text, timeout=10, what="the loss to be logged"
        )
        assert "redis://***@127.0.0.1" in caplog.text
        assert SECRET not in caplog.text
    finally:
        await layer.close()
