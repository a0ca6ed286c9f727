"""The realtime channel layer: local first, no echo, degraded never broken.

Design note: docs/channel-layer.md. Membership and queues are process-wide (any event loop of
this process may deliver to them); Redis connections belong to one event loop each
(``LoopLink``), because an asyncio socket cannot be shared between loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import inspect
import itertools
import logging
import math
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import msgpack
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

from realtime_layer.cluster import (
    ClusterEndpoint,
    SlotRouter,
    cluster_endpoints,
    cluster_slots,
    slot_map_remap,
)
from realtime_layer.endpoints import HashRing, RedisEndpoint
from realtime_layer.links import DEGRADED, HEALTHY, REDIS_FAILURES, LinkSettings, ShardLink
from realtime_layer.loops import LoopLink, run_on_loop
from realtime_layer.named import (
    ALREADY_PUSHED,
    FULL,
    GROUP_PUSH,
    MEMBERSHIP_TTL_SECONDS,
    NOT_A_MEMBER,
    PUSHED,
    RELAYS_IN_FLIGHT_MAX,
    NamedMember,
    list_key,
    membership_key,
    pushed_key,
)
from realtime_layer.queues import (
    DROPPED,
    POLICIES,
    REFUSED,
    ChannelQueue,
    dedup_digest,
)
from realtime_layer.wire import (
    NEWER_MESSAGES_IGNORED,
    WIRE_VERSION,
    Envelope,
    NewerMessage,
    Verdict,
    WireError,
    decode,
    encode_group_envelope,
)

__all__ = ["ChannelFull", "RealtimeChannelLayer"]

logger = logging.getLogger(__name__)

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
    # Every message a full or overflowed queue did not keep, whatever the kind below.
    "queue_overflows",
    "channel_full",  # a local send() refused with ChannelFull
    "remote_send_refused",  # a send() from another instance refused (its sender got ChannelFull)
    "group_full_dropped",  # a group_send's message not queued for one full member
    "ephemeral_shed",  # an ephemeral message shed by a full "close" channel
    "overflow_closed",  # "close" channels that overflowed (the consumer is told to close)
    "overflow_dropped",  # messages dropped by a "close" channel that overflowed
    "expired",  # messages older than expiry, never delivered
    "channels_expired",  # queues of channels nobody read for longer than expiry, reaped
    "send_unconfirmed",  # a send() to another instance that got no verdict in time
    "undeliverable",
    "redis_errors",
    "reconnects",
    "resubscribed",
    "recoveries",
    "probe_failures",
    "subscribe_timeouts",
    # Group subscriptions given up after lingering past their last local member.
    "linger_released",
    # Cluster: MOVED/ASK replies and dropped sharded subscriptions seen, and slot map re-reads.
    "slot_moves",
    "slot_map_refreshes",
    # Group messages not relayed into a named channel: too many relays in flight.
    "named_relay_dropped",
    # Messages of a newer wire version (wire.py), ignored.
    "newer_version_ignored",
)

# Senders and versions whose newer messages were logged (each once).
_NEWER_SEEN_MAX = 1_000

# A resharding moves slots one after another: a burst of MOVED replies makes one re-read.
SLOT_REFRESH_PAUSE_SECONDS = 0.1

_TOKEN_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# Cache of group names decoded from Redis channel names; bounded by clearing.
_GROUP_NAME_CACHE_MAX = 10_000

# A send() whose message a full channel did not queue raises ChannelFull, whatever the policy.
NOT_QUEUED = (REFUSED, DROPPED)

# The verdict an instance sends back for a direct send() from another instance.
VERDICT_OK = "ok"
VERDICT_FULL = "full"
VERDICT_GONE = "gone"

# A named channel's list: refuse at capacity, push, and let the key die one expiry after the
# last push (a name nobody reads is not kept forever).
_NAMED_PUSH = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

_pack = msgpack.Packer(use_bin_type=True).pack


def _unpack(data: bytes) -> dict[str, Any]:
    envelope: dict[str, Any] = msgpack.unpackb(data, raw=False)
    return envelope


def _dedup_key(message: dict[str, Any]) -> str | None:
    key = message.get("dedup_key")
    return key if type(key) is str else None


def _digest(key: str | None) -> bytes | None:
    return None if key is None else dedup_digest(key)


def _token(instance_id: str) -> str:
    return _TOKEN_UNSAFE.sub("-", instance_id)[:40]


def _known_options() -> list[str]:
    return [
        name
        for name in inspect.signature(RealtimeChannelLayer.__init__).parameters
        if name not in ("self", "unknown")
    ]


class RealtimeChannelLayer(BaseChannelLayer):
    """Channels layer over Redis pub/sub, local-only when no Redis is configured."""

    extensions = ["groups", "flush"]
    # Each channel gets a given message["dedup_key"] at most once (queues.py), so a consumer
    # on this layer needs no memory of its own for that.
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
        group_linger: float = 0.0,
        group_linger_max: int = 10_000,
        expiry: float = 60,
        cluster: bool = False,
        **unknown: object,
    ) -> None:
        if unknown:
            # A typo in CHANNEL_LAYERS["CONFIG"] must not silently fall back to a default.
            known = _known_options()
            hints = []
            for name in sorted(unknown):
                close = difflib.get_close_matches(name, known, n=1)
                hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise TypeError(
                f"RealtimeChannelLayer: unknown option {', '.join(hints)}; "
                f"known options: {', '.join(known)}"
            )
        if not expiry > 0:
            raise ValueError(f"RealtimeChannelLayer: expiry must be > 0 seconds, got {expiry!r}")
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        if isinstance(hosts, str):
            hosts = [url.strip() for url in hosts.split(",") if url.strip()]
        endpoints = [RedisEndpoint.from_url(url) for url in hosts or []]
        if sentinels:
            endpoints = [
                RedisEndpoint.from_sentinels(sentinels, sentinel_master, password=sentinel_password)
            ]
        self._ring: HashRing | SlotRouter = HashRing([endpoint.name for endpoint in endpoints])
        if cluster and hosts:
            # A Redis Cluster: one endpoint per master, channels routed by slot.
            masters = cluster_endpoints(hosts, connect_timeout=connect_timeout)
            endpoints = list(masters)
            self._ring = SlotRouter(masters, prefix)
        self.endpoints = endpoints
        # The cluster's slot map as last read (``_refresh_slot_map``); every LoopLink holds
        # ``self.endpoints`` itself, which a refresh changes in place and only appends to.
        self._map_version = 0
        self._slot_addresses: list[tuple[str, int] | None] = []
        self._refresh_task: asyncio.Task[None] | None = None
        self._refresh_again = False
        self._refresh_hint: tuple[str, int] | None = None
        self.instance_id = instance_id or f"instance-{secrets.token_hex(4)}"
        self._token = _token(self.instance_id)
        self.prefix = prefix
        self._group_prefix = f"{prefix}:g:".encode()
        self._inbox_name = f"{prefix}:i:{self._token}"
        self._inbox = self._inbox_name.encode()
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
            linger_seconds=max(0.0, group_linger),
            linger_max=max(0, group_linger_max),
        )
        # A BLPOP on a named channel, and the wait for another instance's verdict on a send:
        # short, so a cancelled receive or a dead instance costs at most this long.
        self._block_seconds = min(1.0, bounded)
        self._verdict_seconds = min(1.0, bounded)
        self._channels: dict[str, ChannelQueue] = {}
        self._groups: dict[str, dict[str, None]] = {}
        # With Redis: named channels this instance added to groups (named.py), by channel and
        # by group, and the relays of other instances' group messages into their lists.
        self._named: dict[str, NamedMember] = {}
        self._named_groups: dict[str, dict[str, None]] = {}
        self._relays: set[asyncio.Task[None]] = set()
        # Numbers group messages for named channels' relays; a random start so that a
        # restarted instance with the same id does not reuse numbers still remembered.
        self._message_numbers = itertools.count(secrets.randbits(62))
        self._links: dict[asyncio.AbstractEventLoop, LoopLink] = {}
        self._links_lock = threading.Lock()
        self._hooked: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        # Set when a link that had members closed: some channels may wait for adoption.
        self._orphaned = False
        self._group_names: dict[bytes, str] = {}
        self._requests = itertools.count(1)
        self._verdicts: dict[int, asyncio.Future[str]] = {}
        self._listeners: dict[int, tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = {}
        self._listener_ids = itertools.count(1)
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._newer_seen: set[tuple[str, int]] = set()
        self._degraded_since: float | None = None
        self._degraded_total = 0.0
        # Expiry's clocks: monotonic for this process's queues, wall time for named channels'
        # Redis lists (their senders are other processes). Tests move them.
        self._clock: Callable[[], float] = time.monotonic
        self._wall_clock: Callable[[], float] = time.time
        self._next_sweep = self._clock() + self._sweep_every()

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
        shards = [shard for link in self._live_links() for shard in link.shards]
        result["subscriptions"] = sum(len(shard.confirmed) for shard in shards)
        # Of those wanted, the groups kept past their last local member (``group_linger``).
        result["lingering"] = sum(len(shard.lingering) for shard in shards)
        result["channels"] = len(self._channels)
        result["groups"] = len(self._groups.keys() | self._named_groups.keys())
        result["queued"] = sum(len(chan.items) for chan in list(self._channels.values()))
        return result

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

    # Overflow policy and recovery (the layer API beyond Channels', docs/channel-layer.md)

    def set_overflow_policy(self, channel: str, policy: str) -> None:
        """ "refuse" (default: a full channel refuses the new message) or "close" (see queues)."""
        if policy not in POLICIES:
            raise ValueError(f"overflow policy must be one of {POLICIES}, got {policy!r}")
        self.require_valid_channel_name(channel)
        self._refuse_named_with_redis(channel, "an overflow policy")
        self._channel(channel).policy = policy

    def add_recovery_listener(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` on this event loop each time a degraded Redis link is healthy
        again with its subscriptions restored (what was published meanwhile did not arrive).
        Returns the function that removes the listener."""
        loop = asyncio.get_running_loop()
        key = next(self._listener_ids)
        self._listeners[key] = (loop, callback)

        def remove() -> None:
            self._listeners.pop(key, None)

        return remove

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

    def on_recovered(self) -> None:
        self._counters["recoveries"] += 1
        for key, (loop, callback) in list(self._listeners.items()):
            if loop.is_closed():
                self._listeners.pop(key, None)
            else:
                loop.call_soon_threadsafe(_run_listener, callback)

    def on_moved(
        self, link: ShardLink[LoopLink], channels: list[bytes], hint: tuple[str, int] | None
    ) -> None:
        """A cluster node answered MOVED/ASK or dropped sharded subscriptions: its slots moved.
        ``channels`` (no longer wanted by ``link``) are subscribed where the new map says."""
        self._counters["slot_moves"] += 1
        link.loop_link.misrouted.update(channels)
        if hint is not None:
            self._refresh_hint = hint
        task = self._refresh_task
        if task is not None and not task.done():
            self._refresh_again = True
            return
        self._refresh_task = link.loop.create_task(self._refresh_slot_map())

    async def _refresh_slot_map(self) -> None:
        """Read the slot map again and move every link's channels to their slots' masters."""
        attempt = 0
        settings = self.link_settings
        while True:
            self._refresh_again = False
            await asyncio.sleep(SLOT_REFRESH_PAUSE_SECONDS)
            hint, self._refresh_hint = self._refresh_hint, None
            first = self.endpoints[0]
            assert isinstance(first, ClusterEndpoint)
            try:
                table = await cluster_slots(
                    first, limit_seconds=settings.connect_timeout, first=hint
                )
            except REDIS_FAILURES as exc:
                attempt += 1
                logger.warning("layer: cannot read the cluster's slot map (%r)", exc)
                await asyncio.sleep(min(settings.backoff_max, settings.backoff_min * 2**attempt))
                continue
            endpoints, addresses = slot_map_remap(
                [e for e in self.endpoints if isinstance(e, ClusterEndpoint)], table
            )
            self._slot_addresses = addresses
            self.endpoints[:] = endpoints
            self._ring = SlotRouter(endpoints, self.prefix)
            self._map_version += 1
            self._counters["slot_map_refreshes"] += 1
            current = asyncio.get_running_loop()
            for link in self._live_links():
                if link.loop is current:
                    self._apply_slot_map(link)
                else:
                    with contextlib.suppress(RuntimeError):  # that loop closed meanwhile
                        link.loop.call_soon_threadsafe(self._apply_slot_map, link)
            if not self._refresh_again:
                return

    def _apply_slot_map(self, link: LoopLink) -> None:
        """On ``link``'s loop: shard links for new masters, and every wanted channel on the
        link of its slot's master now, subscribed in batches."""
        if not link.alive:
            return
        link.map_version = self._map_version
        endpoints = list(self.endpoints)
        while len(link.shards) < len(endpoints):
            link.add_shard(endpoints[len(link.shards)])
        moves: dict[int, list[bytes]] = {}
        for index, shard in enumerate(link.shards):
            address = self._slot_addresses[index] if index < len(self._slot_addresses) else None
            shard.retarget(endpoints[index], address)
            stray = [ch for ch in shard.wanted if self._ring.node_for(ch.decode()) != index]
            for channel in shard.forget(stray):
                moves.setdefault(self._ring.node_for(channel.decode()), []).append(channel)
        for channel in link.misrouted:
            moves.setdefault(self._ring.node_for(channel.decode()), []).append(channel)
        link.misrouted.clear()
        for target, channels in moves.items():
            link.shards[target].want_many(channels)
            self._counters["resubscribed"] += len(channels)
        if moves:
            # Whatever was published to a moved slot before its channels were subscribed again
            # did not arrive: the listeners (the chat's healing) fetch it now.
            self.on_recovered()

    def on_remote(self, link: ShardLink[LoopLink], channel: bytes, data: bytes) -> None:
        """An envelope from Redis: drop our own echo, then deliver to members homed here."""
        try:
            message = decode(data)
        except WireError as exc:
            self._counters["undeliverable"] += 1
            logger.warning("layer: undeliverable message on %r: %s", channel, exc)
            return
        if type(message) is NewerMessage:
            self._on_newer(message)
            return
        if message.origin == self.instance_id:
            self._counters["echoes_dropped"] += 1
            return
        if type(message) is Verdict:  # the answer to our send()
            self._on_verdict(message.request, message.verdict)
            return
        assert type(message) is Envelope
        origin, dedup_key, target = message.origin, message.dedup_key, message.target
        ephemeral, payload, tag = message.ephemeral, message.payload, message.tag
        loop_link = link.loop_link
        # The key travels as the sender's string (instances of other versions read it too).
        key = dedup_digest(dedup_key) if dedup_key is not None else None
        now = self._now()
        if target is not None:
            verdict = VERDICT_GONE
            chan = self._channels.get(target)
            if chan is not None and not self._homed(chan, loop_link):
                return  # the loop this channel lives on delivers (and answers) it
            if chan is None:
                self._counters["undeliverable"] += 1
            else:
                outcome = chan.enqueue(
                    payload, ephemeral, key, now, self._counters, "delivered_remote",
                    "remote_send_refused",
                )  # fmt: skip
                verdict = VERDICT_FULL if outcome in NOT_QUEUED else VERDICT_OK
            if tag is not None:
                inbox = f"{self.prefix}:i:{_token(origin)}"
                answer = Verdict(self.instance_id, tag, verdict).encode()
                self._shard(loop_link, inbox).publish(inbox, answer)
            return
        group = self._group_names.get(channel)
        if group is None:
            group = channel[len(self._group_prefix) :].decode()
            if len(self._group_names) > _GROUP_NAME_CACHE_MAX:
                self._group_names.clear()
            self._group_names[channel] = group
        named = self._named_groups.get(group)
        if named:
            self._relay_remote(loop_link, group, named, origin, dedup_key, tag, data, payload)
        members = self._groups.get(group)
        if not members:
            return
        channels = self._channels
        for name in tuple(members):
            chan = channels.get(name)
            if chan is not None and self._homed(chan, loop_link):
                chan.enqueue(
                    payload, ephemeral, key, now, self._counters, "delivered_remote",
                    "group_full_dropped",
                )  # fmt: skip

    # Named channels in groups (named.py)

    def _message_id(self, origin: str, dedup_key: object, number: int | None, data: bytes) -> str:
        """The id two instances relaying one group message into a named channel agree on."""
        if type(dedup_key) is str:
            return f"k:{dedup_key}"  # a channel gets a given key at most once
        if number is not None:
            return f"m:{_token(origin)}:{number}"
        # From an instance that numbers no messages: the envelope itself.
        return "e:" + hashlib.blake2b(data, digest_size=16).hexdigest()

    def _relay_remote(
        self,
        loop_link: LoopLink,
        group: str,
        named: dict[str, None],
        origin: str,
        dedup_key: object,
        number: int | None,
        data: bytes,
        payload: bytes,
    ) -> None:
        names = []
        for name in tuple(named):
            member = self._named.get(name)
            if member is not None and self._homed(member, loop_link):
                names.append(name)
        if not names:
            return
        if len(self._relays) >= RELAYS_IN_FLIGHT_MAX:
            self._counters["named_relay_dropped"] += len(names)
            logger.warning(
                "group %s: %d named channels not relayed (Redis slow)", group, len(names)
            )
            return
        message_id = self._message_id(origin, dedup_key, number, data)
        entry = _pack((self._wall_clock(), payload))
        task = loop_link.loop.create_task(
            self._push_to_named(group, names, entry, message_id, "delivered_remote")
        )
        self._relays.add(task)
        task.add_done_callback(self._relays.discard)

    async def _push_to_named(
        self, group: str, names: list[str], entry: bytes, message_id: str, delivered: str
    ) -> None:
        """Push one group message into named channels' lists (each at most once, named.py)."""
        link = self._link()
        counters = self._counters
        for name in names:
            member = self._named.get(name)
            unconfirmed = member is not None and group in member.unconfirmed
            client = link.named_client(self._ring.node_for(name))
            try:
                result = await client.eval(
                    GROUP_PUSH,
                    3,
                    list_key(self.prefix, name),
                    membership_key(self.prefix, name),
                    pushed_key(self.prefix, name, message_id),
                    entry,
                    self.get_capacity(name),
                    max(1, math.ceil(self.expiry)),
                    group,
                    MEMBERSHIP_TTL_SECONDS,
                    "1" if unconfirmed else "0",
                )
            except REDIS_FAILURES as exc:
                counters["publish_failures"] += 1
                logger.warning("group %s: push to named channel %s failed: %r", group, name, exc)
                continue
            if member is not None:
                member.unconfirmed.discard(group)
            if result == PUSHED:
                counters[delivered] += 1
            elif result == FULL:
                counters["group_full_dropped"] += 1
                counters["queue_overflows"] += 1
            elif result == ALREADY_PUSHED:
                counters["duplicates_dropped"] += 1
            elif result == NOT_A_MEMBER:
                self._forget_named(group, name)  # another process discarded it

    async def _named_group_add(self, group: str, channel: str) -> None:
        current = self._link()
        member = self._named.get(channel)
        if member is None:
            member = self._named[channel] = NamedMember(current)
        member.groups.add(group)
        self._named_groups.setdefault(group, {})[channel] = None
        key = membership_key(self.prefix, channel)
        client = current.named_client(self._ring.node_for(channel))
        try:
            async with client.pipeline(transaction=False) as pipe:
                pipe.sadd(key, group)
                pipe.expire(key, MEMBERSHIP_TTL_SECONDS)
                await pipe.execute()
            member.unconfirmed.discard(group)
        except REDIS_FAILURES as exc:
            # Kept here; the first message relayed once Redis answers records it there.
            member.unconfirmed.add(group)
            self._counters["redis_errors"] += 1
            logger.warning("group_add %s %s: Redis failed: %r", group, channel, exc)
        await self._subscribe_member(member, current, group, channel)

    async def _named_group_discard(self, group: str, channel: str) -> None:
        client = self._link().named_client(self._ring.node_for(channel))
        try:
            await client.srem(membership_key(self.prefix, channel), group)
        except REDIS_FAILURES as exc:
            self._counters["redis_errors"] += 1
            logger.warning("group_discard %s %s: Redis failed: %r", group, channel, exc)
        self._forget_named(group, channel)

    def _forget_named(self, group: str, channel: str) -> None:
        named = self._named_groups.get(group)
        if named is not None:
            named.pop(channel, None)
            if not named:
                del self._named_groups[group]
        member = self._named.get(channel)
        if member is None or group not in member.groups:
            return
        member.groups.discard(group)
        member.unconfirmed.discard(group)
        if not member.groups:
            del self._named[channel]
        self._unsubscribe_member(member.link, group, channel)

    def _on_newer(self, message: NewerMessage) -> None:
        """A message of a newer release (a deployment rolling): not misread, counted, logged
        once per sender and version (every one of them would flood the log)."""
        self._counters["newer_version_ignored"] += 1
        NEWER_MESSAGES_IGNORED.labels(version=str(message.version)).inc()
        seen = (str(message.origin), message.version)
        if seen not in self._newer_seen and len(self._newer_seen) < _NEWER_SEEN_MAX:
            self._newer_seen.add(seen)
            logger.warning(
                "layer: ignoring messages of wire version %d from %s (this instance reads up "
                "to %d)",
                message.version,
                message.origin,
                WIRE_VERSION,
            )

    def _on_verdict(self, request: int, verdict: str) -> None:
        waiter = self._verdicts.get(request)
        if waiter is None or waiter.done():
            return
        loop = waiter.get_loop()
        if loop.is_closed():
            return
        if loop is asyncio.get_running_loop():
            waiter.set_result(verdict)
        else:
            loop.call_soon_threadsafe(_resolve, waiter, verdict)

    @staticmethod
    def _homed(chan: ChannelQueue | NamedMember, link: LoopLink) -> bool:
        home = chan.link
        if home is link:
            return True
        if home is None or not home.alive:
            chan.link = link  # adopted: its loop is gone
            return True
        return False

    # Time, expiry and the reaping of channels nobody reads

    def _sweep_every(self) -> float:
        return max(0.05, min(self.expiry / 4, 15.0))

    def _now(self) -> float:
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        return now

    def _sweep(self, now: float) -> None:
        """Expire old messages; forget channels that nobody has read for longer than expiry
        and that no group routes to (a consumer that is gone), with whatever they held."""
        self._next_sweep = now + self._sweep_every()
        counters = self._counters
        expiry = self.expiry
        for name, chan in list(self._channels.items()):
            chan.expire(now, counters)
            if chan.waiters or chan.groups or now - chan.last_used <= expiry:
                continue
            if chan.overflowed or chan.newest_age(now) > expiry:
                del self._channels[name]
                counters["channels_expired"] += 1
                counters["expired"] += sum(1 for _, _, at in chan.items if at != math.inf)

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
            link.map_version = self._map_version
            self._links[loop] = link
        self._hook_loop_close(loop)
        if self._orphaned:
            self._adopt_orphans(link)
        return link

    def _adopt_orphans(self, link: LoopLink) -> None:
        """Members whose loop link closed (``close()``, or their loop ended) move to ``link``
        and are subscribed again, so other instances' group_send keeps reaching them."""
        self._orphaned = False
        for name, chan in list(self._channels.items()):
            home = chan.link
            if chan.groups and (home is None or not home.alive):
                chan.link = link
                for group in chan.groups:
                    link.group_members.setdefault(group, set()).add(name)
                    self._shard(link, group).want(self._group_prefix + group.encode())
        for name, member in list(self._named.items()):
            home = member.link
            if member.groups and (home is None or not home.alive):
                member.link = link
                for group in member.groups:
                    link.group_members.setdefault(group, set()).add(name)
                    self._shard(link, group).want(self._group_prefix + group.encode())

    def _hook_loop_close(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close this loop's link when the loop is closed without ``await layer.close()``
        (an ``async_to_sync`` call, ``asyncio.run``): no Redis socket or task is left behind."""
        if loop in self._hooked:
            return
        self._hooked.add(loop)
        original = loop.close
        layer_ref = weakref.ref(self)

        def close() -> None:
            layer = layer_ref()
            if layer is not None and not loop.is_running() and not loop.is_closed():
                with layer._links_lock:
                    link = layer._links.pop(loop, None)
                if link is not None:
                    try:
                        loop.run_until_complete(link.close())
                    except Exception:
                        logger.exception("Closing the channel layer's Redis link failed")
                    layer._after_close(link)
            original()

        setattr(loop, "close", close)  # noqa: B010 (an instance attribute over the method)

    def _after_close(self, closed: LoopLink) -> None:
        self.on_state_change()
        if not closed.group_members:
            return  # nothing was homed there (a short async_to_sync loop that only sent)
        self._orphaned = True
        for link in self._live_links():
            if link is not closed:
                with contextlib.suppress(RuntimeError):  # that loop closed meanwhile
                    link.loop.call_soon_threadsafe(self._adopt_orphans, link)
                return

    def _shard(self, link: LoopLink, name: str) -> ShardLink[LoopLink]:
        if link.map_version != self._map_version:
            self._apply_slot_map(link)  # a refresh ran on another loop and this one is behind
        return link.shards[self._ring.node_for(name)]

    # Names

    def _owns(self, channel: str) -> bool:
        return channel[: channel.index("!")].rpartition(".")[2] == self._token

    def _refuse_named_with_redis(self, channel: str, what: str) -> None:
        if self.endpoints and "!" not in channel:
            raise TypeError(
                f"{what} needs a channel made by new_channel(): {channel!r} is a named channel, "
                "a Redis list shared by every process (docs/channel-layer.md)"
            )

    def _channel(self, name: str) -> ChannelQueue:
        chan = self._channels.get(name)
        if chan is None:
            link = None
            if self.endpoints:
                with contextlib.suppress(RuntimeError):  # no running loop: adopted later
                    link = self._link()
            now = self._clock()
            chan = ChannelQueue(name, self.get_capacity(name), self.expiry, link, now)
            self._channels[name] = chan
        return chan

    async def _publish(self, route: str, channel_name: str, envelope: bytes) -> bool:
        shard = self._shard(self._link(), route)
        if shard.state != HEALTHY:
            await shard.wait_settled()
        await shard.wait_writable()
        return shard.publish(channel_name, envelope)

    # Channel layer API

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A channel name routed to this instance; its inbox is subscribed before returning."""
        separator = "" if prefix.endswith(".") else "."
        name = f"{prefix}{separator}{self._token}!{secrets.token_hex(8)}"
        self._channel(name)
        if self.endpoints:
            # Every caller waits for the confirmation (the shard shares one SUBSCRIBE among
            # concurrent callers), so a send right after new_channel() returns is received.
            await self._shard(self._link(), self._inbox_name).subscribe(self._inbox)
        return name

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Queue for a channel of this instance, or have its instance queue it; either way a
        full channel refuses the new message with ``ChannelFull`` (nothing old is dropped)."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        payload = _pack(message)
        ephemeral = message.get("ephemeral") is True
        key = _dedup_key(message)
        if "!" not in channel:
            if self.endpoints:
                await self._send_named(channel, payload)
                return
        elif not self._owns(channel):
            await self._send_remote(channel, payload, ephemeral, key)
            return
        # The sweep runs first: looked up before it, a channel it reaps would take the
        # message into a queue the layer no longer holds, and its receiver would wait forever.
        now = self._now()
        chan = self._channel(channel)
        outcome = chan.enqueue(
            payload, ephemeral, _digest(key), now, self._counters, "delivered_local",
            "channel_full",
        )  # fmt: skip
        if outcome in NOT_QUEUED:
            raise ChannelFull(channel)

    async def _send_remote(
        self, channel: str, payload: bytes, ephemeral: bool, key: str | None
    ) -> None:
        if not self.endpoints:
            self._counters["undeliverable"] += 1
            return
        token = channel[: channel.index("!")].rpartition(".")[2]
        inbox = f"{self.prefix}:i:{token}"
        link = self._link()
        # The verdict comes back on our own inbox.
        await self._shard(link, self._inbox_name).subscribe(self._inbox)
        request = next(self._requests)
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._verdicts[request] = waiter
        try:
            envelope = Envelope(
                self.instance_id, key, channel, ephemeral, payload, request
            ).encode()
            if not await self._publish(inbox, inbox, envelope):
                return  # degraded: counted as a publish failure, never raised
            try:
                async with asyncio.timeout(self._verdict_seconds):
                    verdict = await waiter
            except TimeoutError:
                # Its instance is gone or slow: as with a channel nobody reads, no error.
                self._counters["send_unconfirmed"] += 1
                return
        finally:
            self._verdicts.pop(request, None)
        if verdict == VERDICT_FULL:
            raise ChannelFull(channel)

    async def _send_named(self, channel: str, payload: bytes) -> None:
        """A named channel is one Redis list shared by every process: any receiver takes it."""
        node = self._ring.node_for(channel)
        client = self._link().named_client(node)
        entry = _pack((self._wall_clock(), payload))
        try:
            pushed = await client.eval(
                _NAMED_PUSH,
                1,
                f"{self.prefix}:n:{channel}",
                entry,
                self.get_capacity(channel),
                max(1, math.ceil(self.expiry)),
            )
        except REDIS_FAILURES as exc:
            self._counters["publish_failures"] += 1
            logger.warning("send to named channel %s failed: %r", channel, exc)
            return
        if not pushed:
            self._counters["channel_full"] += 1
            self._counters["queue_overflows"] += 1
            raise ChannelFull(channel)
        self._counters["delivered_local"] += 1

    async def receive(self, channel: str) -> dict[str, Any]:
        """The next message for a channel of this process (waits without any Redis call), or
        for a named channel (from its Redis list, whichever process sent it)."""
        chan = self._channels.get(channel)
        if chan is None:  # names already queued here were validated when first seen
            self.require_valid_channel_name(channel)
            if "!" in channel:
                assert self._owns(channel), "receive() is for channels made by this instance"
            elif self.endpoints:
                return await self._receive_named(channel)
            chan = self._channel(channel)
        elif self.endpoints and chan.groups and (chan.link is None or not chan.link.alive):
            self._adopt_orphans(self._link())  # its link was closed: subscribe again here
        loop = asyncio.get_running_loop()
        counters = self._counters
        while True:
            now = self._now()
            # A wait longer than expiry may have let the sweep reap this queue (and a send
            # meanwhile start another): wait on the one the layer holds.
            chan = self._channels.setdefault(channel, chan)
            chan.last_used = now
            if (payload := chan.pop(now, counters)) is not None:
                break
            waiter: asyncio.Future[None] = loop.create_future()
            chan.add_waiter(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                chan.remove_waiter(waiter)
                if waiter.done() and not waiter.cancelled() and chan.items:
                    chan.wake_one()  # pass on the wake-up this receiver will not use
                elif (
                    not chan.items
                    and not chan.groups
                    and not chan.waiters
                    and self._channels.get(channel) is chan
                ):
                    # Nobody waits and nothing routes here: forget the channel.
                    del self._channels[channel]
                chan.last_used = self._clock()
                raise
        chan.last_used = self._clock()
        return _unpack(payload)

    def receive_nowait(self, channel: str) -> dict[str, Any] | None:
        """The next message queued for a channel made by this instance's ``new_channel()``,
        or None at once.

        With ``receive_notify`` it lets a consumer wait for its client and its channel on one
        future instead of a task per source (a task, its coroutine and its future are about
        1 KiB a socket that sits idle). ``receive()`` stays the interface for everything else.
        """
        chan = self._local_queue(channel)
        now = self._now()
        # The sweep above may have reaped this queue (and a send meanwhile started another).
        chan = self._channels.setdefault(channel, chan)
        chan.last_used = now
        payload = chan.pop(now, self._counters)
        return None if payload is None else _unpack(payload)

    def receive_notify(self, channel: str, waiter: asyncio.Future[None]) -> None:
        """Resolve ``waiter`` when a message may be ready for ``receive_nowait`` (at once if
        one is queued). Until ``receive_notify_cancel``, the channel counts as read: the
        sweep keeps it, as it keeps one a ``receive()`` waits on."""
        chan = self._local_queue(channel)
        chan = self._channels.setdefault(channel, chan)
        chan.last_used = self._clock()
        if chan.items:
            if not waiter.done():
                waiter.set_result(None)
            return
        chan.add_waiter(waiter)

    def receive_notify_cancel(
        self, channel: str, waiter: asyncio.Future[None] | None, *, leaving: bool = False
    ) -> None:
        """Stop notifying ``waiter``: the caller was woken by something else, or (``leaving``)
        will not read the channel again, as when a ``receive()`` is cancelled."""
        chan = self._channels.get(channel)
        if chan is None:
            return
        if waiter is not None:
            chan.remove_waiter(waiter)
        chan.last_used = self._clock()
        if leaving and not chan.items and not chan.groups and not chan.waiters:
            # Nobody waits and nothing routes here: forget the channel.
            del self._channels[channel]

    def _local_queue(self, channel: str) -> ChannelQueue:
        chan = self._channels.get(channel)
        if chan is None:  # names already queued here were validated when first seen
            self.require_valid_channel_name(channel)
            if "!" not in channel or not self._owns(channel):
                raise TypeError(f"{channel!r} is not a channel made by this instance")
            return self._channel(channel)
        if self.endpoints and chan.groups and (chan.link is None or not chan.link.alive):
            self._adopt_orphans(self._link())  # its link was closed: subscribe again here
        return chan

    async def _receive_named(self, channel: str) -> dict[str, Any]:
        key = f"{self.prefix}:n:{channel}"
        while True:
            client = self._link().named_client(self._ring.node_for(channel))
            # BLPOP for less than the socket timeout (FINDINGS: redis-py 8's 5 s timeout).
            pop = asyncio.ensure_future(client.blpop([key], timeout=self._block_seconds))
            try:
                reply = await asyncio.shield(pop)
            except asyncio.CancelledError:
                # Redis may already have handed us a message: put it back at the head for
                # the next receiver instead of losing it (waits at most one BLPOP).
                with contextlib.suppress(Exception):
                    late = await pop
                    if late is not None:
                        await client.lpush(key, late[1])
                raise
            except REDIS_FAILURES as exc:
                self._counters["redis_errors"] += 1
                logger.warning("receive on named channel %s: Redis failed: %r", channel, exc)
                await asyncio.sleep(self.link_settings.backoff_max)
                continue
            if reply is None:
                continue
            sent_at, payload = msgpack.unpackb(reply[1], raw=False)
            if self._wall_clock() - sent_at > self.expiry:
                self._counters["expired"] += 1
                continue
            return _unpack(payload)

    async def group_add(self, group: str, channel: str) -> None:
        """Join; returns once Redis confirmed the group's subscription (when one was needed)."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        if self.endpoints and "!" not in channel:
            await self._named_group_add(group, channel)
            return
        chan = self._channel(channel)
        self._groups.setdefault(group, {})[channel] = None
        chan.groups.add(group)
        if not self.endpoints:
            return
        await self._subscribe_member(chan, self._link(), group, channel)

    async def _subscribe_member(
        self, chan: ChannelQueue | NamedMember, current: LoopLink, group: str, channel: str
    ) -> None:
        """Count ``channel`` in its home loop's members of ``group``, subscribing the group
        there when it is the first; returns once Redis confirmed (or the wait timed out)."""
        link = chan.link
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
            self._shard(link, group).linger(self._group_prefix + group.encode())

    async def group_discard(self, group: str, channel: str) -> None:
        """Leave; the last local member's leaving unsubscribes this instance from the group
        (after ``group_linger`` seconds, in a batch with others, when that is set)."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        if self.endpoints and "!" not in channel:
            await self._named_group_discard(group, channel)
            return
        members = self._groups.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                self._groups.pop(group, None)
        chan = self._channels.get(channel)
        if chan is None:
            return
        chan.groups.discard(group)
        if self.endpoints:
            self._unsubscribe_member(chan.link, group, channel)

    def _unsubscribe_member(self, link: LoopLink | None, group: str, channel: str) -> None:
        if link is None or not link.alive:
            return
        if link.loop is asyncio.get_running_loop():
            self._member_removed(link, group, channel)
        else:
            link.loop.call_soon_threadsafe(self._member_removed, link, group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Deliver to local members now, then publish one envelope for other instances.

        A full member does not get this message (counted in ``group_full_dropped``; a
        "close" member overflows instead); nothing already queued is dropped."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        payload = _pack(message)
        ephemeral = message.get("ephemeral") is True
        key = _dedup_key(message)
        now = self._now()  # also the sweep's tick: group_send is the busiest call
        members = self._groups.get(group)
        if members:
            channels = self._channels
            counters = self._counters
            digest = _digest(key)
            for name in tuple(members):
                chan = channels.get(name)
                if chan is not None:
                    chan.enqueue(
                        payload, ephemeral, digest, now, counters, "delivered_local",
                        "group_full_dropped",
                    )  # fmt: skip
        if self.endpoints:
            number = next(self._message_numbers)
            envelope = encode_group_envelope(self.instance_id, key, ephemeral, payload, number)
            name = f"{self.prefix}:g:{group}"
            await self._publish(group, name, envelope)
            named = self._named_groups.get(group)
            if named:
                message_id = self._message_id(self.instance_id, key, number, envelope)
                entry = _pack((self._wall_clock(), payload))
                await self._push_to_named(group, list(named), entry, message_id, "delivered_local")

    async def flush(self) -> None:
        """Forget every local channel and group, and close this loop's Redis connections.

        Named channels' Redis lists are left to expire: they may hold other processes' work
        (channels_redis's flush deletes every key of its prefix, theirs included)."""
        self._channels.clear()
        self._groups.clear()
        self._named.clear()
        self._named_groups.clear()
        await self.close()

    async def close(self) -> None:
        """Stop this event loop's background tasks and Redis connections. Members homed on
        this loop subscribe again on this loop's next use of the layer (or another loop's)."""
        loop = asyncio.get_running_loop()
        with self._links_lock:
            link = self._links.pop(loop, None)
        if link is not None:
            await link.close()
            self._after_close(link)


def _run_listener(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        logger.exception("A channel layer recovery listener failed")


def _resolve(waiter: asyncio.Future[str], verdict: str) -> None:
    if not waiter.done():
        waiter.set_result(verdict)
