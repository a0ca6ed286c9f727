"""The layer's Redis connections for one event loop; see docs/channel-layer.md.

Per event loop and per Redis node, a ``ShardLink`` owns two redis-py connections (replies parsed
by hiredis): a writer that pipelines PUBLISH (never behind a SUBSCRIBE) and a reader in
subscribed mode. A supervisor task runs the degraded state machine: connecting -> healthy ->
degraded -> (jittered backoff) -> healthy, re-subscribing every wanted channel in batches on each
reconnect, and probing an idle reader with PING so a silently dead socket is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

import hiredis
from redis.asyncio.connection import Connection
from redis.crc import key_slot
from redis.exceptions import AskError, RedisError, ResponseError

from realtime_layer.endpoints import RedisEndpoint

logger = logging.getLogger(__name__)

CONNECTING = "connecting"
HEALTHY = "healthy"
DEGRADED = "degraded"

# Queued publishes that make a sender wait for the writer task to take them (bounds memory when
# a sender never yields or the socket is slow).
FLUSH_BATCH = 512

# What a Redis connection may raise while Redis is down, restarting or unreachable.
REDIS_FAILURES: tuple[type[BaseException], ...] = (OSError, TimeoutError, RedisError, ValueError)

# hiredis's C encoder (the one redis-py's sync client uses); its stub types the argument as a
# 1-tuple, hence the cast.
pack_command = cast(Callable[[tuple[str | bytes, ...]], bytes], hiredis.pack_command)

_PING = pack_command(("PING",))


@dataclass(frozen=True)
class LinkSettings:
    socket_timeout: float
    connect_timeout: float
    probe_interval: float
    backoff_min: float
    backoff_max: float
    subscribe_batch: int
    subscribe_timeout: float
    # How long a group's subscription outlives its last local member, and how many may do so
    # at once per link (0: unsubscribe at once).
    linger_seconds: float = 0.0
    linger_max: int = 0


class LayerCallbacks(Protocol):
    """What a link reports back to the layer."""

    def on_remote(self, link: ShardLink[Any], channel: bytes, data: bytes) -> None: ...

    def on_state_change(self) -> None: ...

    def count(self, name: str, amount: int = 1) -> None: ...

    def on_recovered(self) -> None: ...

    def on_moved(
        self, link: ShardLink[Any], channels: list[bytes], hint: tuple[str, int] | None
    ) -> None: ...


# The loop link that holds a shard link (``loops.LoopLink``): a type parameter, not an import,
# since the loop link is what builds its shard links.
OwnerT = TypeVar("OwnerT")


class ShardLink(Generic[OwnerT]):
    """One event loop's connections to one Redis node."""

    def __init__(
        self,
        *,
        endpoint: RedisEndpoint,
        settings: LinkSettings,
        layer: LayerCallbacks,
        loop_link: OwnerT,
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.layer = layer
        self.loop_link = loop_link
        self.loop = asyncio.get_running_loop()
        self.state = CONNECTING
        self.wanted: set[bytes] = set()
        self.confirmed: set[bytes] = set()
        self.pending: dict[bytes, list[asyncio.Future[None]]] = {}
        # Wanted channels nobody on this loop needs any more, each with the loop time its
        # subscription is given up at; oldest first (see ``linger``).
        self.lingering: dict[bytes, float] = {}
        self._linger_timer: asyncio.TimerHandle | None = None
        self.writer: Connection | None = None
        self.reader: Connection | None = None
        # The node the current connections go to (a cluster master may change under it).
        self.address: tuple[str, int] | None = None
        self.in_flight = 0
        # Replies read so far on each connection: the watch tells progress from silence by them.
        self.writer_replies = 0
        self.reader_replies = 0
        self._out: list[bytes] = []
        # Why the last connection ended, for the log line that says so.
        self._loss_reason = "unknown"
        self._out_ready = asyncio.Event()
        self._out_taken = asyncio.Event()
        self._sent = asyncio.Event()
        self._commands: list[bytes] = []
        self._commands_ready = asyncio.Event()
        self._io_tasks: list[asyncio.Task[None]] = []
        self._generation = 0
        self._lost = asyncio.Event()
        self._settled = asyncio.Event()
        self._pong = asyncio.Event()
        # Plain or sharded pub/sub (a Redis Cluster master; realtime_layer/cluster.py).
        self._publish_verb = "SPUBLISH" if endpoint.sharded else "PUBLISH"
        self._verbs = (
            (b"SSUBSCRIBE", b"SUNSUBSCRIBE")
            if endpoint.sharded
            else (
                b"SUBSCRIBE",
                b"UNSUBSCRIBE",
            )
        )
        self._task = self.loop.create_task(self._supervise(), name=f"layer-link {endpoint.name}")

    # Publishing

    def publish(self, channel: str, envelope: bytes) -> bool:
        """Queue one PUBLISH; the writer task sends everything queued in this tick in one write."""
        if self.state != HEALTHY:
            self.layer.count("publish_failures")
            return False
        self._out.append(pack_command((self._publish_verb, channel, envelope)))
        self.in_flight += 1
        if not self._out_ready.is_set():
            self._out_ready.set()
        return True

    async def wait_writable(self) -> None:
        """Back-pressure: a full batch waits for the writer task to take it (bounded)."""
        if len(self._out) >= FLUSH_BATCH and self.writer is not None:
            self._out_taken.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.socket_timeout):
                    await self._out_taken.wait()

    async def wait_settled(self) -> None:
        """Wait for the first connection attempt to succeed or fail (bounded)."""
        if self.state == CONNECTING:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.connect_timeout):
                    await self._settled.wait()

    async def _send_publishes(self, connection: Connection) -> None:
        ready, taken, sent = self._out_ready, self._out_taken, self._sent
        limit = self.settings.socket_timeout
        while True:
            await ready.wait()
            ready.clear()
            out, self._out = self._out, []
            taken.set()
            if not out:
                continue
            sent.set()
            async with asyncio.timeout(limit):
                await connection.send_packed_command(out, check_health=False)

    async def _read_replies(self, connection: Connection) -> None:
        read, can_read = connection.read_response, connection.can_read
        count = self.layer.count
        idle = self.settings.probe_interval
        sent = self._sent
        while True:
            if self.in_flight <= 0:
                sent.clear()
                await sent.wait()
                continue
            try:
                # A reply already buffered is parsed without arming a timer; a read that may
                # block is bounded below the socket timeout (the watch judges silence).
                if await can_read():
                    await read(timeout=math.inf)
                elif await read(timeout=idle) is None:
                    continue
            except ResponseError as exc:
                self.writer_replies += 1
                self.in_flight -= 1
                count("publish_failures")
                if self.endpoint.sharded:
                    self._on_error_reply(exc)
                continue
            self.writer_replies += 1
            self.in_flight -= 1
            count("published")

    # Subscribing

    async def subscribe(self, channel: bytes) -> None:
        """Subscribe and wait for Redis to confirm; never raises, never waits past a timeout.

        A lingering subscription is taken back as it is: no command, no wait."""
        if self.lingering:
            self.lingering.pop(channel, None)
        if channel in self.confirmed:
            return
        if self.state == CONNECTING:
            self.wanted.add(channel)
            await self.wait_settled()
            if self.state != HEALTHY or channel in self.confirmed:
                return
        pending = self.pending.get(channel)
        if channel in self.wanted and pending:
            waiter = pending[-1]
        else:
            self.wanted.add(channel)
            if self.state != HEALTHY:
                return  # subscribed by the reconnect that ends the degraded state
            waiters = self._send_subscribe([channel])
            if not waiters:
                return
            waiter = waiters[0]
        try:
            async with asyncio.timeout(self.settings.subscribe_timeout):
                await asyncio.shield(waiter)
        except TimeoutError:
            self.layer.count("subscribe_timeouts")

    def want(self, channel: bytes) -> None:
        """Subscribe without waiting for Redis to confirm (a reconnect subscribes it anyway)."""
        if self.lingering:
            self.lingering.pop(channel, None)
        if channel in self.wanted:
            return
        self.wanted.add(channel)
        if self.state == HEALTHY:
            self._send_subscribe([channel])

    def want_many(self, channels: list[bytes]) -> None:
        """``want`` for many channels, sent in batches (a slot map change moves them here)."""
        if self.lingering:
            for channel in channels:
                self.lingering.pop(channel, None)
        fresh = [channel for channel in channels if channel not in self.wanted]
        self.wanted.update(fresh)
        if self.state == HEALTHY:
            for start in range(0, len(fresh), self.settings.subscribe_batch):
                self._send_subscribe(fresh[start : start + self.settings.subscribe_batch])

    def forget(self, channels: list[bytes]) -> list[bytes]:
        """Stop wanting channels that live on another node now (nothing is sent: the node
        that lost their slot has dropped them); whoever waits for their confirmation stops.
        Returns those still needed where they live now: a lingering one is needed nowhere."""
        needed = []
        for channel in channels:
            if self.lingering.pop(channel, None) is None:
                needed.append(channel)
            self.wanted.discard(channel)
            self.confirmed.discard(channel)
            for waiter in self.pending.pop(channel, []):
                if not waiter.done():
                    waiter.set_result(None)
        return needed

    def retarget(self, endpoint: RedisEndpoint, address: tuple[str, int] | None) -> None:
        """The endpoint after a slot map change; reconnect if its master is another node."""
        self.endpoint = endpoint
        if address is not None and self.address is not None and address != self.address:
            self._loss_reason = f"its slots are served by {address[0]}:{address[1]} now"
            self._lost.set()

    def _on_error_reply(self, error: ResponseError) -> bool:
        """A ``MOVED``/``ASK`` reply: the slot map changed. True when it was one."""
        if not isinstance(error, AskError):  # MovedError is an AskError
            return False
        slot, hint = int(error.slot_id), (str(error.host), int(error.port))
        moved = [channel for channel in self.wanted if key_slot(channel) == slot]
        self.layer.on_moved(self, self.forget(moved), hint)
        return True

    def unsubscribe(self, channel: bytes) -> None:
        self.lingering.pop(channel, None)
        self.wanted.discard(channel)
        self.confirmed.discard(channel)
        if self.state == HEALTHY and self.reader is not None:
            self._command(pack_command((self._verbs[1], channel)))

    def linger(self, channel: bytes) -> None:
        """The last member on this loop left: keep the subscription for ``linger_seconds``.

        A client that reconnects meanwhile (a flapping network, a reconnect storm) joins
        again without a SUBSCRIBE, and its disconnect costs no UNSUBSCRIBE: lingering
        channels are given up later, many in one write. What arrives for one meanwhile has
        no member here and is dropped on arrival, as it was before a member joined. At most
        ``linger_max`` linger; past that the oldest are given up at once (a batch of them).
        """
        settings = self.settings
        if settings.linger_seconds <= 0 or settings.linger_max <= 0 or channel not in self.wanted:
            self.unsubscribe(channel)
            return
        lingering = self.lingering
        lingering.pop(channel, None)  # to the end: the order is the order of the deadlines
        lingering[channel] = self.loop.time() + settings.linger_seconds
        excess = len(lingering) - settings.linger_max
        if excess > 0:
            # A batch, so that a full set costs one write per linger_max / 8 departures.
            self._release(list(itertools.islice(lingering, excess + settings.linger_max // 8)))
        if self._linger_timer is None and lingering:
            self._arm_linger_timer()

    def _release_due(self) -> None:
        """Give up the subscriptions whose linger ended (and those ending soon: one batch)."""
        self._linger_timer = None
        lingering = self.lingering
        if not lingering:
            return
        horizon = self.loop.time() + self.settings.linger_seconds / 4
        due = list(itertools.takewhile(lambda channel: lingering[channel] <= horizon, lingering))
        self._release(due)
        if lingering:
            self._arm_linger_timer()

    def _arm_linger_timer(self) -> None:
        until = next(iter(self.lingering.values()))  # the oldest: the first deadline
        self._linger_timer = self.loop.call_at(until, self._release_due)

    def _release(self, channels: list[bytes]) -> None:
        for channel in channels:
            del self.lingering[channel]
            self.wanted.discard(channel)
            self.confirmed.discard(channel)
        if not channels or self.state != HEALTHY or self.reader is None:
            return  # not subscribed on any connection now; a reconnect leaves them out
        if self.endpoint.sharded:
            # SUNSUBSCRIBE, like SSUBSCRIBE, takes channels of one slot: one command each.
            for channel in channels:
                self._command(pack_command((b"SUNSUBSCRIBE", channel)))
        else:
            batch = self.settings.subscribe_batch
            for start in range(0, len(channels), batch):
                self._command(pack_command((b"UNSUBSCRIBE", *channels[start : start + batch])))
        self.layer.count("linger_released", len(channels))

    def _send_subscribe(self, channels: list[bytes]) -> list[asyncio.Future[None]]:
        if self.reader is None:
            return []
        waiters = []
        for channel in channels:
            waiter: asyncio.Future[None] = self.loop.create_future()
            self.pending.setdefault(channel, []).append(waiter)
            waiters.append(waiter)
        if self.endpoint.sharded:
            # SSUBSCRIBE takes channels of one slot only: one command each, one write for all.
            for channel in channels:
                self._command(pack_command((b"SSUBSCRIBE", channel)))
        else:
            self._command(pack_command((b"SUBSCRIBE", *channels)))
        return waiters

    def _command(self, packed: bytes) -> None:
        # One ordered queue for the reader's commands: an UNSUBSCRIBE and a later SUBSCRIBE of
        # the same channel reach Redis in the order they were asked for.
        self._commands.append(packed)
        self._commands_ready.set()

    async def _send_commands(self, connection: Connection) -> None:
        ready = self._commands_ready
        limit = self.settings.socket_timeout
        while True:
            await ready.wait()
            ready.clear()
            out, self._commands = self._commands, []
            if out:
                async with asyncio.timeout(limit):
                    await connection.send_packed_command(out, check_health=False)

    async def _read_pushes(self, connection: Connection) -> None:
        read, can_read = connection.read_response, connection.can_read
        on_remote = self.layer.on_remote
        idle = self.settings.probe_interval
        while True:
            try:
                if await can_read():
                    reply = await read(timeout=math.inf)
                else:
                    reply = await read(timeout=idle)
                    if reply is None:
                        continue  # idle: the watch probes with PING
            except ResponseError as exc:
                self.reader_replies += 1
                if not (self.endpoint.sharded and self._on_error_reply(exc)):
                    logger.warning("Redis refused a pub/sub command: %s", exc)
                continue
            self.reader_replies += 1
            if type(reply) is not list:
                # Outside subscribed mode (no channel subscribed yet, or the last one just
                # unsubscribed) Redis answers PING with a plain +PONG, not a pub/sub push.
                if reply == b"PONG":
                    self._pong.set()
                continue
            kind = reply[0]
            if kind == b"message" or kind == b"smessage":
                on_remote(self, reply[1], reply[2])
            elif kind == b"subscribe" or kind == b"ssubscribe":
                self._on_subscribed(reply[1])
            elif kind == b"sunsubscribe" and reply[1] in self.wanted:
                # Redis dropped a sharded subscription we still want: its slot moved (a
                # resharding, or this node became a replica). The layer reads the slot map
                # again and subscribes it where it lives now.
                self.layer.on_moved(self, self.forget([reply[1]]), None)
            elif kind == b"pong":
                self._pong.set()

    def _on_subscribed(self, channel: bytes) -> None:
        waiters = self.pending.get(channel)
        if waiters:
            waiter = waiters.pop(0)
            if not waiters:
                del self.pending[channel]
            if not waiter.done():
                waiter.set_result(None)
        if channel in self.wanted:
            self.confirmed.add(channel)

    # The state machine

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.layer.on_state_change()
        if state != CONNECTING:
            self._settled.set()

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.settings.backoff_max, self.settings.backoff_min * (2**attempt))
        # Full jitter: instances that lost Redis together do not reconnect in lockstep.
        return random.uniform(self.settings.backoff_min, max(ceiling, self.settings.backoff_min))

    async def _supervise(self) -> None:
        attempt = 0
        try:
            while True:
                try:
                    await self._connect()
                except REDIS_FAILURES as exc:
                    stale = self._detach()
                    self.layer.count("redis_errors")
                    if self.state != DEGRADED:
                        logger.warning("Redis %s unavailable: %r", self.endpoint.name, exc)
                    self._set_state(DEGRADED)
                    await self._dispose(stale)
                    attempt += 1
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                recovered = attempt > 0
                attempt = 0
                self._set_state(HEALTHY)
                if recovered:
                    # Healthy again and every wanted channel re-subscribed: whatever was
                    # published meanwhile is gone, and the layer's listeners may heal it.
                    self.layer.count("reconnects")
                    logger.info("Redis %s is back; subscriptions restored", self.endpoint.name)
                    self.layer.on_recovered()
                await self._watch()
                stale = self._detach()
                self.layer.count("redis_errors")
                logger.warning(
                    "Redis %s connection lost (%s)", self.endpoint.name, self._loss_reason
                )
                self._set_state(DEGRADED)
                await self._dispose(stale)
                attempt = 1
                await asyncio.sleep(self._backoff(0))
        except asyncio.CancelledError:
            await self._dispose(self._detach())
            raise

    async def _open(self, host: str, port: int) -> Connection:
        connection = self.endpoint.connection(
            host=host, port=port, connect_timeout=self.settings.connect_timeout
        )
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                await connection.connect()
                await connection.send_packed_command(_PING, check_health=False)
                await connection.read_response(timeout=math.inf)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)
            raise
        return connection

    async def _connect(self) -> None:
        self._generation += 1
        self._lost.clear()
        settings = self.settings
        host, port = await self.endpoint.resolve(limit_seconds=settings.connect_timeout)
        self.address = (host, port)
        self.writer = await self._open(host, port)
        self.reader = await self._open(host, port)
        self._start(self._send_publishes(self.writer))
        self._start(self._read_replies(self.writer))
        self._start(self._send_commands(self.reader))
        self._start(self._read_pushes(self.reader))
        # Re-subscribe everything wanted, in batches, before declaring the link healthy.
        while missing := [ch for ch in self.wanted if ch not in self.confirmed]:
            for start in range(0, len(missing), settings.subscribe_batch):
                waiters = self._send_subscribe(missing[start : start + settings.subscribe_batch])
                async with asyncio.timeout(settings.subscribe_timeout):
                    await asyncio.gather(*waiters)
            if self._lost.is_set():
                raise ConnectionResetError("lost while subscribing")
            self.layer.count("resubscribed", len(missing))

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        self._io_tasks.append(self.loop.create_task(self._guard(work, self._generation)))

    async def _guard(self, work: Coroutine[Any, Any, None], generation: int) -> None:
        """Run one connection's I/O loop; its failure ends the connection (and only its own)."""
        try:
            await work
        except REDIS_FAILURES as exc:
            self._loss_reason = f"{getattr(work, '__name__', 'io')}: {exc!r}"
        except Exception:
            logger.exception("Layer I/O task for %s failed", self.endpoint.name)
        if generation == self._generation:
            self._lost.set()

    async def _watch(self) -> None:
        """Return when the connection is lost or a probe goes unanswered."""
        interval = self.settings.probe_interval
        reader_seen, writer_seen = self.reader_replies, self.writer_replies
        writer_progress_at = self.loop.time()
        while True:
            try:
                async with asyncio.timeout(interval):
                    await self._lost.wait()
                return
            except TimeoutError:
                pass
            now = self.loop.time()
            if self.in_flight <= 0 or self.writer_replies != writer_seen:
                writer_seen, writer_progress_at = self.writer_replies, now
            elif now - writer_progress_at > self.settings.socket_timeout:
                # Publishes in flight and no reply for a socket timeout: the writer is dead.
                self.layer.count("probe_failures")
                self._loss_reason = "no reply to publishes within the socket timeout"
                return
            if self.reader_replies != reader_seen:
                reader_seen = self.reader_replies
                continue
            self._pong.clear()
            self._command(_PING)
            try:
                async with asyncio.timeout(min(self.settings.socket_timeout, interval * 2)):
                    await self._pong.wait()
            except TimeoutError:
                self.layer.count("probe_failures")
                self._loss_reason = "the subscriber did not answer PING"
                return
            reader_seen = self.reader_replies

    def _detach(self) -> list[Any]:
        """Forget this connection's state at once; return what is left to close."""
        self._generation += 1
        if self.in_flight:
            # Queued, or written but never acknowledged: their fate is unknown, count them as
            # failed (``in_flight`` counts the queued ones too).
            self.layer.count("publish_failures", self.in_flight)
            self.in_flight = 0
        self._out = []
        self._commands = []
        stale: list[Any] = [*self._io_tasks, self.writer, self.reader]
        self._io_tasks = []
        self.writer = self.reader = None
        self.confirmed.clear()
        # Nobody needs a lingering channel: the reconnect does not subscribe it again.
        self.wanted.difference_update(self.lingering)
        self.lingering.clear()
        for waiters in self.pending.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self.pending.clear()
        return stale

    async def _dispose(self, stale: list[Any]) -> None:
        tasks = [item for item in stale if isinstance(item, asyncio.Task)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for item in stale:
            if isinstance(item, Connection):
                with contextlib.suppress(Exception):
                    await item.disconnect(nowait=True)

    async def close(self) -> None:
        if self.state == HEALTHY:
            # Drain: what was published before close() reaches Redis (bounded wait).
            self._out_ready.set()
            # Replies only decrement a count, so poll it briefly (at most about 1 s).
            for _ in range(200):
                if self.in_flight <= 0 or self.writer is None:
                    break
                await asyncio.sleep(0.005)
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._set_state(CONNECTING)
