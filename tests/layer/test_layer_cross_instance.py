"""Two layer instances with different instance ids on one real Redis (docs/channel-layer.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import msgpack
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from realtime_layer import ChannelFull, RealtimeChannelLayer
from realtime_layer.wire import (
    WIRE_VERSION,
    Envelope,
    Verdict,
    decode,
    encode_group_envelope,
)
from scripts.procs import RedisServer, wait_until
from tests.support.async_poll import async_wait_until
from tests.support.clock import skew_clocks
from tests.support.layers import layer_pair, make_layer, nothing_within, receive_within

pytestmark = pytest.mark.redis


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[RealtimeChannelLayer, RealtimeChannelLayer]]:
    async with layer_pair(redis_url) as layers:
        yield layers


async def test_group_send_reaches_members_on_both_instances(pair) -> None:
    a, b = pair
    on_a, on_b = await a.new_channel(), await b.new_channel()
    await a.group_add("conv.1", on_a)
    await b.group_add("conv.1", on_b)

    await a.group_send("conv.1", {"type": "realtime.event", "event": {"n": 1}, "dedup_key": "e1"})

    assert (await receive_within(a, on_a))["dedup_key"] == "e1"
    assert (await receive_within(b, on_b))["dedup_key"] == "e1"
    assert a.counters()["delivered_local"] == 1
    assert b.counters()["delivered_remote"] == 1


async def test_send_to_a_channel_on_another_instance(pair) -> None:
    a, b = pair
    await a.new_channel()
    on_b = await b.new_channel()

    await a.send(on_b, {"type": "connection.close", "code": 4429})

    assert await receive_within(b, on_b) == {"type": "connection.close", "code": 4429}


async def test_own_publications_are_dropped_as_echoes(pair) -> None:
    a, b = pair
    on_a, on_b = await a.new_channel(), await b.new_channel()
    await a.group_add("user.7", on_a)
    await b.group_add("user.7", on_b)

    await a.group_send("user.7", {"type": "realtime.join", "conversation_id": "c"})

    assert (await receive_within(a, on_a))["conversation_id"] == "c"
    await receive_within(b, on_b)
    await async_wait_until(lambda: a.counters()["echoes_dropped"] == 1, timeout=2)
    assert await nothing_within(a, on_a)


async def test_a_member_never_gets_the_same_dedup_key_twice(pair) -> None:
    a, b = pair
    on_b = await b.new_channel()
    await b.group_add("user.1", on_b)
    await b.group_add("conv.x", on_b)
    event: dict[str, object] = {"type": "realtime.event", "dedup_key": "same"}

    # One event reaches the socket through two groups, from another instance.
    await a.group_send("user.1", event)
    await a.group_send("conv.x", event)
    await a.group_send("conv.x", {**event, "dedup_key": "next"})

    assert (await receive_within(b, on_b))["dedup_key"] == "same"
    assert (await receive_within(b, on_b))["dedup_key"] == "next"
    assert b.counters()["duplicates_dropped"] == 1


async def test_membership_of_a_live_socket_outlives_any_expiry(redis_url: str) -> None:
    # channels_redis forgets members after group_expiry; here only group_discard ends one.
    a, b = make_layer(redis_url, "inst-a", expiry=10), make_layer(redis_url, "inst-b")
    clock = skew_clocks(a, b)
    try:
        member, gone = await a.new_channel(), await a.new_channel()
        await a.group_add("conv.long", member)
        await a.send(gone, {"type": "nobody reads this"})
        clock.advance(11)  # past the expiry, and the sweep's interval

        async def expiry_ran() -> bool:
            await a.group_send("conv.tick", {"type": "tick"})  # any use runs the sweep
            return a.counters()["channels_expired"] == 1

        # The gone channel is reaped: the sweep has judged the member too, past expiry.
        await async_wait_until(expiry_ran, timeout=5, what="the gone channel reaped")
        await b.group_send("conv.long", {"type": "realtime.event", "dedup_key": "late"})

        assert (await receive_within(a, member))["dedup_key"] == "late"
    finally:
        await a.close()
        await b.close()


async def test_send_to_a_full_channel_on_another_instance_raises_channel_full(
    redis_url: str,
) -> None:
    a, b = make_layer(redis_url, "inst-a"), make_layer(redis_url, "inst-b", capacity=2)
    try:
        on_b = await b.new_channel()
        await a.send(on_b, {"type": "m", "n": 0})
        await a.send(on_b, {"type": "m", "n": 1})
        with pytest.raises(ChannelFull):
            await a.send(on_b, {"type": "m", "n": 2})

        # The earlier messages are all there; the refused one is not.
        assert [(await receive_within(b, on_b))["n"] for _ in range(2)] == [0, 1]
        assert await nothing_within(b, on_b)
        assert b.counters()["remote_send_refused"] == 1
    finally:
        await a.close()
        await b.close()


async def test_send_to_a_channel_whose_consumer_is_gone_is_quiet(pair) -> None:
    a, b = pair
    gone = await b.new_channel()
    b._channels.pop(gone)  # its consumer left; Channels raises nothing for that
    await a.new_channel()

    await a.send(gone, {"type": "m"})
    await a.send("specific.inst-nowhere!abc", {"type": "m"})  # no such instance: bounded wait

    assert b.counters()["undeliverable"] == 1
    assert a.counters()["send_unconfirmed"] == 1


async def test_a_second_concurrent_new_channel_waits_for_the_inbox_subscription(pair) -> None:
    a, b = pair
    first = asyncio.create_task(a.new_channel())
    await asyncio.sleep(0)  # the first is now waiting for its SUBSCRIBE
    second = await a.new_channel()

    (shard,) = a._link().shards
    assert a._inbox in shard.confirmed
    await b.send(second, {"type": "early"})
    assert (await receive_within(a, second))["type"] == "early"
    await first


async def test_after_close_a_loops_members_subscribe_again_on_next_use(pair) -> None:
    a, b = pair
    member = await a.new_channel()
    await a.group_add("conv.back", member)
    await a.close()

    receiving = asyncio.create_task(receive_within(a, member))  # the next use of the layer
    await async_wait_until(lambda: a.counters()["subscriptions"] == 1, timeout=2, what="resub")
    await b.group_send("conv.back", {"type": "after close"})

    assert (await receiving)["type"] == "after close"


def redis_clients(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return len(client.client_list()) - 1  # not this one
    finally:
        client.close()


def test_a_loop_closed_without_layer_close_leaves_no_socket_or_task(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import gc

    from asgiref.sync import async_to_sync

    layer = make_layer(redis_url, "inst-loop")
    # Connections an earlier test left to the garbage collector close now, not in the middle
    # of the count below.
    gc.collect()
    before = redis_clients(redis_url)

    async def use_and_forget() -> None:
        channel = await layer.new_channel()
        await layer.group_add("conv.gone", channel)
        await layer.group_send("conv.gone", {"type": "x"})
        assert await layer.check(1.0)  # the pooled client too
        assert redis_clients(redis_url) > before

    async_to_sync(use_and_forget)()  # its loop ends here, without await layer.close()
    gc.collect()

    assert not layer._links
    assert "Task was destroyed" not in caplog.text
    wait_until(lambda: redis_clients(redis_url) == before, timeout=2, what="sockets closed")


async def test_group_discard_of_last_member_unsubscribes(pair) -> None:
    a, b = pair
    on_a = await a.new_channel()
    await a.group_add("conv.gone", on_a)
    assert a.counters()["subscriptions"] == 2  # inbox + group

    await a.group_discard("conv.gone", on_a)
    await b.group_send("conv.gone", {"type": "x"})

    assert await nothing_within(a, on_a)
    assert a.counters()["subscriptions"] == 1


async def test_redis_outage_degrades_then_recovers_by_itself(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    a, b = make_layer(server.url, "inst-a"), make_layer(server.url, "inst-b")
    try:
        on_a, on_b = await a.new_channel(), await b.new_channel()
        await a.group_add("conv.f", on_a)
        await b.group_add("conv.f", on_b)
        assert a.status == "healthy"
        recovered: list[str] = []
        b.add_recovery_listener(lambda: recovered.append("b"))
        remove = a.add_recovery_listener(lambda: recovered.append("removed"))
        remove()

        server.kill()
        # Sending while Redis is gone: no exception, local members still served.
        for n in range(20):
            await a.group_send("conv.f", {"type": "realtime.event", "dedup_key": f"d{n}"})
            await a.send(on_b, {"type": "x"})
        await async_wait_until(lambda: a.status == "degraded", timeout=2, what="degraded")
        assert [(await receive_within(a, on_a))["dedup_key"] for _ in range(20)] == [
            f"d{n}" for n in range(20)
        ]
        assert recovered == []
        assert a.counters()["publish_failures"] > 0
        assert not await a.check(0.2)

        server.start()  # same port, empty: the layer must re-subscribe on its own
        await async_wait_until(
            lambda: a.status == "healthy" and b.status == "healthy", timeout=2, what="recovery"
        )
        # b's listener ran once b's link was healthy and its subscriptions were restored.
        await async_wait_until(lambda: recovered, timeout=2, what="the recovery listener")
        assert recovered == ["b"]
        assert b.counters()["recoveries"] == 1
        await a.group_send("conv.f", {"type": "realtime.event", "dedup_key": "back"})
        message = await receive_within(b, on_b)
        while message["type"] == "x":  # a direct send may have got through before the kill
            message = await receive_within(b, on_b)
        assert message["dedup_key"] == "back"
        assert await a.check(0.5)
        assert a.counters()["degraded_seconds"] > 0
    finally:
        await a.close()
        await b.close()


async def test_layer_starts_degraded_when_redis_is_down_and_serves_locally() -> None:
    from scripts.procs import free_port

    layer = make_layer(f"redis://127.0.0.1:{free_port()}/0", "inst-down")
    try:
        channel = await layer.new_channel()
        await layer.group_add("conv.d", channel)
        await layer.group_send("conv.d", {"type": "hello"})
        assert await receive_within(layer, channel) == {"type": "hello"}
        assert layer.status == "degraded"
    finally:
        await layer.close()


async def test_groups_spread_over_several_redis_nodes(
    redis_factory: Callable[..., RedisServer],
) -> None:
    urls = [redis_factory().url, redis_factory().url]
    a, b = make_layer(",".join(urls), "inst-a"), make_layer(",".join(urls), "inst-b")
    try:
        # Four groups on each node, whatever the ports hash to.
        names = [f"conv.{n}" for n in range(200)]
        groups = [g for g in names if b._ring.node_for(g) == 0][:4]
        groups += [g for g in names if b._ring.node_for(g) == 1][:4]
        channels = [await b.new_channel() for _ in groups]
        for group, channel in zip(groups, channels, strict=True):
            await b.group_add(group, channel)
        for n, group in enumerate(groups):
            await a.group_send(group, {"type": "n", "n": n})
        assert [(await receive_within(b, ch))["n"] for ch in channels] == list(range(8))
        per_node = [shard.confirmed for shard in b._link().shards]
        assert all(len(confirmed) >= 4 for confirmed in per_node)
    finally:
        await a.close()
        await b.close()


async def test_an_idle_link_without_subscriptions_passes_its_probes(redis_url: str) -> None:
    # Outside subscribed mode Redis answers PING with +PONG; a probe that only understood the
    # pub/sub form took every such instance for dead and dropped what it published meanwhile.
    layer = make_layer(redis_url, "inst-idle", probe_interval=0.05)
    try:
        await layer.group_send("conv.nobody-here", {"type": "x"})
        (shard,) = [s for link in layer._live_links() for s in link.shards]
        await async_wait_until(lambda: shard.reader_replies >= 5, timeout=5, what="probes")
        assert layer.status == "healthy"
        counters = layer.counters()
        assert counters["probe_failures"] == 0
        assert counters["reconnects"] == 0
    finally:
        await layer.close()


# The wire between instances (realtime_layer/wire.py)


def _ignored_by_the_metric(version: int) -> float:
    value = REGISTRY.get_sample_value(
        "realtime_layer_wire_newer_ignored_total", {"version": str(version)}
    )
    return value or 0.0


async def test_a_message_of_a_newer_wire_version_is_ignored_counted_and_logged(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A rolling deployment: an instance of a later release publishes messages this one cannot
    read. They are not delivered, not fatal, counted (layer counter and Prometheus) and logged
    once; an earlier release's unversioned message is still read."""
    caplog.set_level(logging.WARNING, logger="realtime_layer.core")
    newer = WIRE_VERSION + 1
    layer = make_layer(redis_url, "inst-current")
    publisher = aioredis.Redis.from_url(redis_url)
    before = _ignored_by_the_metric(newer)
    try:
        member = await layer.new_channel()
        await layer.group_add("conv.v", member)
        future = msgpack.packb(
            ["inst-next", None, None, False, b"\x92\x01\x02", 7, newer, {"a": "new field"}],
            use_bin_type=True,
        )
        legacy = msgpack.packb(
            ["inst-prev", "k1", None, False, msgpack.packb({"type": "from.previous"})],
            use_bin_type=True,
        )
        for data in (future, legacy, future):
            await publisher.publish("rt:g:conv.v", data)

        assert await receive_within(layer, member) == {"type": "from.previous"}
        await async_wait_until(
            lambda: layer.counters()["newer_version_ignored"] == 2, timeout=5, what="both counted"
        )
        assert await nothing_within(layer, member)
        assert _ignored_by_the_metric(newer) - before == 2
        logged = [r for r in caplog.records if f"wire version {newer}" in r.getMessage()]
        assert len(logged) == 1 and "inst-next" in logged[0].getMessage()
        assert layer.counters()["undeliverable"] == 0
    finally:
        await publisher.aclose()
        await layer.close()


def test_the_wire_types_round_trip_and_read_the_earlier_layout() -> None:
    envelope = Envelope("inst-a", "evt-1", None, True, b"payload", 42)
    assert decode(envelope.encode()) == envelope
    # group_send's fast path builds the same bytes as the declared type.
    assert encode_group_envelope("inst-a", "evt-1", True, b"payload", 42) == envelope.encode()
    verdict = Verdict("inst-b", 9, "full")
    assert decode(verdict.encode()) == verdict
    # The unversioned layouts of the release before (version 1).
    assert decode(msgpack.packb(["inst-a", None, "specific.x!y", False, b"p", 3])) == Envelope(
        "inst-a", None, "specific.x!y", False, b"p", 3, version=1
    )
    assert decode(msgpack.packb(["inst-b", 9, "ok"])) == Verdict("inst-b", 9, "ok", version=1)
