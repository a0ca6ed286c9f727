"""The realtime channel layer: local first, no echo, degraded never broken.

Design note: docs/channel-layer.md. Membership and queues are process-wide (any event loop of
this process may deliver to them); Redis connections belong to one event loop each
(``LoopLink``), because an asyncio socket cannot be shared between loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
import threading
import time
from typing import Any

import msgpack
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

from connections.layer.endpoints import HashRing, RedisEndpoint
from connections.layer.links import DEGRADED, HEALTHY, LinkSettings, ShardLink
from connections.layer.loops import LoopLink, run_on_loop
from connections.layer.queues import DROPPED_EPHEMERAL, ChannelQueue

__all__ = ["ChannelFull", "RealtimeChannelLayer"]

STATUS_LOCAL = "local"
STATUS_HEALTHY = HEALTHY
STATUS_DEGRADED = DEGRADED

COUNTER_NAMES = (
    "published",
    "publish_failures",
    "delivered_local",
    "delivered_remote",
    "echoes_dropped",
    "duplicates_dropped",
    "queue_overflows",
    "ephemeral_dropped",
    "undeliverable",
    "redis_errors",
    "reconnects",
    "resubscribed",
    "probe_failures",
    "subscribe_timeouts",
)

_TOKEN_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# Cache of group names decoded from Redis channel names; bounded by clearing.
_GROUP_NAME_CACHE_MAX = 10_000

_pack = msgpack.Packer(use_bin_type=True).pack


def _unpack(data: bytes) -> dict[str, Any]:
    return msgpack.unpackb(data, raw=False)


def _explicit_event_id(message: dict[str, Any]) -> str | None:
    event = message.get("event")
    if type(event) is dict:
        event_id = event.get("event_id")
        if type(event_id) is str:
            return event_id
    return None


class RealtimeChannelLayer(BaseChannelLayer):
    """Channels layer over Redis pub/sub, local-only when no Redis is configured."""

    extensions = ["groups", "flush"]
    # Each channel gets a given message["event"]["event_id"] at most once (queues.py), so a
    # consumer on this layer needs no memory of its own for that.
    delivers_event_ids_once = True

    def __init__(
        self,
        *,
        hosts: list[str] | str | None = None,
        sentinels: list[str] | None = None,
        sentinel_master: str = "mymaster",
        sentinel_password: str | None = None,
        instance_id: str | None = None,
        prefix: str = "rt",
        capacity: int = 1000,
        channel_capacity: dict[str, int] | None = None,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        probe_interval: float = 2.0,
        backoff_min: float = 0.05,
        backoff_max: float = 1.0,
        subscribe_batch: int = 500,
        subscribe_timeout: float | None = None,
        expiry: int = 60,
        **_ignored: Any,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        if isinstance(hosts, str):
            hosts = [url.strip() for url in hosts.split(",") if url.strip()]
        endpoints = [RedisEndpoint.from_url(url) for url in hosts or []]
        if sentinels:
            endpoints = [
                RedisEndpoint.from_sentinels(sentinels, sentinel_master, password=sentinel_password)
            ]
        self.endpoints = endpoints
        self._ring = HashRing([endpoint.name for endpoint in endpoints])
        self.instance_id = instance_id or f"instance-{secrets.token_hex(4)}"
        self._token = _TOKEN_UNSAFE.sub("-", self.instance_id)[:40]
        self.prefix = prefix
        self._group_prefix = f"{prefix}:g:".encode()
        self._inbox = f"{prefix}:i:{self._token}".encode()
        # Blocking waits stay below the socket timeout (redis-py 8's 5 s default broke
        # channels_redis: issue 422); see docs/channel-layer.md.
        bounded = max(0.05, min(socket_timeout * 0.8, socket_timeout - 0.05))
        self.link_settings = LinkSettings(
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            probe_interval=min(probe_interval, bounded),
            backoff_min=backoff_min,
            backoff_max=backoff_max,
            subscribe_batch=subscribe_batch,
            subscribe_timeout=min(subscribe_timeout or bounded, bounded),
        )
        self._channels: dict[str, ChannelQueue] = {}
        self._groups: dict[str, dict[str, None]] = {}
        self._links: dict[asyncio.AbstractEventLoop, LoopLink] = {}
        self._links_lock = threading.Lock()
        self._group_names: dict[bytes, str] = {}
        self._seq = itertools.count(1)
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._degraded_since: float | None = None
        self._degraded_total = 0.0

    # Health and metrics

    @property
    def status(self) -> str:
        """ "local" without Redis; "degraded" while any Redis node is unreachable."""
        if not self.endpoints:
            return STATUS_LOCAL
        return STATUS_DEGRADED if self._degraded_since is not None else STATUS_HEALTHY

    def counters(self) -> dict[str, int | float]:
        result: dict[str, int | float] = dict(self._counters)
        degraded = self._degraded_total
        if self._degraded_since is not None:
            degraded += time.monotonic() - self._degraded_since
        result["degraded_seconds"] = degraded
        result["subscriptions"] = sum(
            len(shard.confirmed) for link in self._live_links() for shard in link.shards
        )
        result["channels"] = len(self._channels)
        result["groups"] = len(self._groups)
        result["queued"] = sum(len(chan.items) for chan in list(self._channels.values()))
        return result

    def channel_overflowed(self, channel: str) -> int:
        """Non-ephemeral messages this channel lost to overflow: how far behind its consumer is."""
        chan = self._channels.get(channel)
        return chan.overflowed if chan is not None else 0

    def channel_depth(self, channel: str) -> int:
        chan = self._channels.get(channel)
        return len(chan.items) if chan is not None else 0

    async def check(self, timeout: float) -> bool:  # noqa: ASYNC109 (the interface)
        """A real round trip: PING every node on the pool, and the subscriber links alive."""
        if not self.endpoints:
            return True
        try:
            link = self._link()
            async with asyncio.timeout(timeout):
                for client in link.clients():
                    await client.ping()
            return all(shard.state != DEGRADED for shard in link.shards)
        except Exception:
            return False

    # Callbacks from the links

    def count(self, name: str, amount: int = 1) -> None:
        self._counters[name] += amount

    def on_state_change(self) -> None:
        degraded = any(
            shard.state == DEGRADED for link in self._live_links() for shard in link.shards
        )
        now = time.monotonic()
        if degraded and self._degraded_since is None:
            self._degraded_since = now
        elif not degraded and self._degraded_since is not None:
            self._degraded_total += now - self._degraded_since
            self._degraded_since = None

    def on_remote(self, link: ShardLink, channel: bytes, data: bytes) -> None:
        """An envelope from Redis: drop our own echo, then deliver to members homed here."""
        try:
            origin, event_id, target, ephemeral, payload = msgpack.unpackb(data, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            self._counters["undeliverable"] += 1
            return
        if origin == self.instance_id:
            self._counters["echoes_dropped"] += 1
            return
        loop_link = link.loop_link
        explicit_id = event_id if type(event_id) is str else None
        if target is not None:
            chan = self._channels.get(target)
            if chan is None or not self._homed(chan, loop_link):
                self._counters["undeliverable"] += 1
                return
            self._deliver_remote(chan, payload, ephemeral, explicit_id)
            return
        group = self._group_names.get(channel)
        if group is None:
            group = channel[len(self._group_prefix) :].decode()
            if len(self._group_names) > _GROUP_NAME_CACHE_MAX:
                self._group_names.clear()
            self._group_names[channel] = group
        members = self._groups.get(group)
        if not members:
            return
        channels = self._channels
        for name in tuple(members):
            chan = channels.get(name)
            if chan is not None and self._homed(chan, loop_link):
                self._deliver_remote(chan, payload, ephemeral, explicit_id)

    @staticmethod
    def _homed(chan: ChannelQueue, link: LoopLink) -> bool:
        home = chan.link
        if home is link:
            return True
        if home is None or not home.alive:
            chan.link = link  # adopted: its loop is gone
            return True
        return False

    def _deliver_remote(
        self, chan: ChannelQueue, payload: bytes, ephemeral: bool, event_id: str | None
    ) -> None:
        if event_id is not None and chan.is_duplicate(event_id):
            self._counters["duplicates_dropped"] += 1
            return
        self._counters["delivered_remote"] += 1
        dropped = chan.put(payload, ephemeral)
        if dropped:
            self._count_overflow(dropped)

    def _count_overflow(self, dropped: int) -> None:
        self._counters["queue_overflows"] += 1
        if dropped == DROPPED_EPHEMERAL:
            self._counters["ephemeral_dropped"] += 1

    # Loops and links

    def _live_links(self) -> list[LoopLink]:
        return [link for link in list(self._links.values()) if link.alive]

    def _link(self) -> LoopLink:
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is not None and not link.closed:
            return link
        with self._links_lock:
            for old_loop in [lp for lp in self._links if lp.is_closed()]:
                del self._links[old_loop]
            link = LoopLink(endpoints=self.endpoints, settings=self.link_settings, layer=self)
            self._links[loop] = link
        return link

    def _shard(self, link: LoopLink, name: str) -> ShardLink:
        return link.shards[self._ring.node_for(name)]

    # Names

    def _owns(self, channel: str) -> bool:
        return channel[: channel.index("!")].rpartition(".")[2] == self._token

    def _channel(self, name: str) -> ChannelQueue:
        chan = self._channels.get(name)
        if chan is None:
            chan = ChannelQueue(name, self.get_capacity(name), self._link())
            self._channels[name] = chan
        return chan

    async def _publish(self, route: str, channel_name: str, envelope: bytes) -> None:
        shard = self._shard(self._link(), route)
        if shard.state != HEALTHY:
            await shard.wait_settled()
        await shard.wait_writable()
        shard.publish(channel_name, envelope)

    # Channel layer API

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A channel name routed to this instance; its inbox is subscribed before returning."""
        separator = "" if prefix.endswith(".") else "."
        name = f"{prefix}{separator}{self._token}!{secrets.token_hex(8)}"
        self._channel(name)
        if self.endpoints:
            link = self._link()
            if not link.inbox_subscribed:
                link.inbox_subscribed = True
                await self._shard(link, self._inbox.decode()).subscribe(self._inbox)
        return name

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Deliver to a local channel at once, or publish to the inbox of its instance."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        payload = _pack(message)
        ephemeral = message.get("ephemeral") is True
        if "!" not in channel or self._owns(channel):
            chan = self._channel(channel)
            if chan.full() and not ephemeral:
                raise ChannelFull(channel)
            event_id = _explicit_event_id(message)
            if event_id is not None and chan.is_duplicate(event_id):
                self._counters["duplicates_dropped"] += 1
                return
            self._counters["delivered_local"] += 1
            dropped = chan.put(payload, ephemeral)
            if dropped:
                self._count_overflow(dropped)
            return
        if not self.endpoints:
            self._counters["undeliverable"] += 1
            return
        token = channel[: channel.index("!")].rpartition(".")[2]
        inbox = f"{self.prefix}:i:{token}"
        envelope_id: str | int = _explicit_event_id(message) or next(self._seq)
        envelope = _pack((self.instance_id, envelope_id, channel, ephemeral, payload))
        await self._publish(inbox, inbox, envelope)

    async def receive(self, channel: str) -> dict[str, Any]:
        """The next message for a channel of this process; waits without any Redis call."""
        chan = self._channels.get(channel)
        if chan is None:  # names already queued here were validated when first seen
            self.require_valid_channel_name(channel)
            if "!" in channel:
                assert self._owns(channel), "receive() is for channels made by this instance"
            chan = self._channel(channel)
        loop = asyncio.get_running_loop()
        while not chan.items:
            waiter: asyncio.Future[None] = loop.create_future()
            chan.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                with contextlib.suppress(ValueError):
                    chan.waiters.remove(waiter)
                if waiter.done() and not waiter.cancelled() and chan.items:
                    chan.wake_one()  # pass on the wake-up this receiver will not use
                elif not chan.items and not chan.groups and not chan.waiters:
                    # Nobody waits and nothing routes here: forget the channel.
                    self._channels.pop(channel, None)
                raise
        return _unpack(chan.pop())

    async def group_add(self, group: str, channel: str) -> None:
        """Join; returns once Redis confirmed the group's subscription (when one was needed)."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        chan = self._channel(channel)
        self._groups.setdefault(group, {})[channel] = None
        chan.groups.add(group)
        if not self.endpoints:
            return
        link = chan.link
        current = self._link()
        if link is None or not link.alive:
            chan.link = link = current
        if link is current:
            await self._member_added(link, group, channel)
        else:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.link_settings.subscribe_timeout):
                    await run_on_loop(link, lambda: self._member_added(link, group, channel))

    async def _member_added(self, link: LoopLink, group: str, channel: str) -> None:
        link.group_members.setdefault(group, set()).add(channel)
        await self._shard(link, group).subscribe(self._group_prefix + group.encode())

    def _member_removed(self, link: LoopLink, group: str, channel: str) -> None:
        members = link.group_members.get(group)
        if members is None:
            return
        members.discard(channel)
        if not members:
            del link.group_members[group]
            self._shard(link, group).unsubscribe(self._group_prefix + group.encode())

    async def group_discard(self, group: str, channel: str) -> None:
        """Leave; the last local member's leaving unsubscribes this instance from the group."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        members = self._groups.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                self._groups.pop(group, None)
        chan = self._channels.get(channel)
        if chan is None:
            return
        chan.groups.discard(group)
        link = chan.link
        if not self.endpoints or link is None or not link.alive:
            return
        if link.loop is asyncio.get_running_loop():
            self._member_removed(link, group, channel)
        else:
            link.loop.call_soon_threadsafe(self._member_removed, link, group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Deliver to local members now, then publish one envelope for other instances."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        payload = _pack(message)
        ephemeral = message.get("ephemeral") is True
        event_id = _explicit_event_id(message)
        members = self._groups.get(group)
        if members:
            channels = self._channels
            counters = self._counters
            for name in tuple(members):
                chan = channels.get(name)
                if chan is None:
                    continue
                if event_id is not None and chan.is_duplicate(event_id):
                    counters["duplicates_dropped"] += 1
                    continue
                counters["delivered_local"] += 1
                dropped = chan.put(payload, ephemeral)
                if dropped:
                    self._count_overflow(dropped)
        if self.endpoints:
            envelope_id = event_id or next(self._seq)
            envelope = _pack((self.instance_id, envelope_id, None, ephemeral, payload))
            name = f"{self.prefix}:g:{group}"
            await self._publish(group, name, envelope)

    async def flush(self) -> None:
        """Forget every local channel and group, and close this loop's Redis connections."""
        self._channels.clear()
        self._groups.clear()
        await self.close()

    async def close(self) -> None:
        """Stop this event loop's background tasks and Redis connections."""
        loop = asyncio.get_running_loop()
        with self._links_lock:
            link = self._links.pop(loop, None)
        if link is not None:
            await link.close()
            self.on_state_change()

    aclose = close
