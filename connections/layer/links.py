"""The layer's Redis connections for one event loop; see docs/channel-layer.md.

Per event loop and per Redis node, a ``ShardLink`` owns two sockets: a writer that pipelines
PUBLISH (never behind a SUBSCRIBE) and a reader in subscribed mode. A supervisor task runs the
degraded state machine: connecting -> healthy -> degraded -> (jittered backoff) -> healthy,
re-subscribing every wanted channel in batches on each reconnect, and probing an idle reader
with PING so a silently dead socket is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis

from connections.layer.endpoints import RedisEndpoint
from connections.layer.resp import (
    RespConnection,
    RespError,
    RespProtocolError,
    encode_command,
    resp_connect,
)

logger = logging.getLogger(__name__)

CONNECTING = "connecting"
HEALTHY = "healthy"
DEGRADED = "degraded"

# What a Redis socket may raise while Redis is down, restarting or unreachable.
# Publishes written to the socket in one call at most; also the batch a busy tick flushes early.
FLUSH_BATCH = 512

REDIS_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    RespError,
    RespProtocolError,
    ValueError,
)


@dataclass(frozen=True)
class LinkSettings:
    socket_timeout: float
    connect_timeout: float
    probe_interval: float
    backoff_min: float
    backoff_max: float
    subscribe_batch: int
    subscribe_timeout: float


class LayerCallbacks(Protocol):
    """What a link reports back to the layer."""

    def on_remote(self, link: ShardLink, channel: bytes, data: bytes) -> None: ...

    def on_state_change(self) -> None: ...

    def count(self, name: str, amount: int = 1) -> None: ...


class ShardLink:
    """One event loop's connections to one Redis node."""

    def __init__(
        self,
        *,
        endpoint: RedisEndpoint,
        settings: LinkSettings,
        layer: LayerCallbacks,
        loop_link: LoopLink,
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
        self.writer: RespConnection | None = None
        self.reader: RespConnection | None = None
        self.in_flight = 0
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._generation = 0
        self._lost = asyncio.Event()
        self._settled = asyncio.Event()
        self._pong = asyncio.Event()
        self._task = self.loop.create_task(self._supervise(), name=f"layer-link {endpoint.name}")

    # Publishing

    def publish(self, command: bytes) -> bool:
        """Queue one packed PUBLISH; it is written with the others at the end of this tick."""
        if self.state != HEALTHY:
            self.layer.count("publish_failures")
            return False
        out = self._out
        out.append(command)
        self.in_flight += 1
        if len(out) >= FLUSH_BATCH:
            # A sender that never yields must not grow the batch without bound: hand it to
            # the transport now (whose own buffer is bounded by ``wait_writable``).
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._scheduled_flush)
        return True

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        out, self._out = self._out, []
        if not out:
            return
        writer = self.writer
        try:
            if writer is None:
                raise ConnectionResetError("no writer")
            writer.writelines(out)
        except (OSError, RuntimeError):
            self.in_flight -= len(out)
            self.layer.count("publish_failures", len(out))
            self._lost.set()

    async def wait_writable(self) -> None:
        """Back-pressure: wait while the writer's socket buffer is over its high-water mark."""
        writer = self.writer
        if writer is not None and not writer.writable:
            await writer.wait_writable(self.settings.socket_timeout)

    async def wait_settled(self) -> None:
        """Wait for the first connection attempt to succeed or fail (bounded)."""
        if self.state == CONNECTING:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.connect_timeout):
                    await self._settled.wait()

    def _on_writer_reply(self, reply: Any) -> None:
        self.in_flight -= 1
        if isinstance(reply, RespError):
            self.layer.count("publish_failures")
        else:
            self.layer.count("published")

    # Subscribing

    async def subscribe(self, channel: bytes) -> None:
        """Subscribe and wait for Redis to confirm; never raises, never waits past a timeout."""
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

    def unsubscribe(self, channel: bytes) -> None:
        self.wanted.discard(channel)
        self.confirmed.discard(channel)
        if self.state == HEALTHY and self.reader is not None:
            try:
                self.reader.write(encode_command(b"UNSUBSCRIBE", channel))
            except OSError:
                self._lost.set()

    def _send_subscribe(self, channels: list[bytes]) -> list[asyncio.Future[None]]:
        reader = self.reader
        if reader is None:
            return []
        waiters = []
        for channel in channels:
            waiter: asyncio.Future[None] = self.loop.create_future()
            self.pending.setdefault(channel, []).append(waiter)
            waiters.append(waiter)
        try:
            reader.write(encode_command(b"SUBSCRIBE", *channels))
        except OSError:
            self._lost.set()
        return waiters

    def _on_reader_push(self, reply: Any) -> None:
        if type(reply) is list:
            kind = reply[0]
            if kind == b"message":
                self.layer.on_remote(self, reply[1], reply[2])
                return
            if kind == b"subscribe":
                channel = reply[1]
                waiters = self.pending.get(channel)
                if waiters:
                    waiter = waiters.pop(0)
                    if not waiters:
                        del self.pending[channel]
                    if not waiter.done():
                        waiter.set_result(None)
                if channel in self.wanted:
                    self.confirmed.add(channel)
                return
            if kind == b"pong":
                self._pong.set()
                return
            return
        if isinstance(reply, RespError):
            logger.warning("Redis refused a pub/sub command: %s", reply)

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
                    self._teardown()
                    self.layer.count("redis_errors")
                    if self.state != DEGRADED:
                        logger.warning("Redis %s unavailable: %r", self.endpoint.name, exc)
                    self._set_state(DEGRADED)
                    attempt += 1
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                if attempt:
                    self.layer.count("reconnects")
                    logger.info("Redis %s is back; subscriptions restored", self.endpoint.name)
                attempt = 0
                self._set_state(HEALTHY)
                await self._watch()
                self._teardown()
                self.layer.count("redis_errors")
                logger.warning("Redis %s connection lost", self.endpoint.name)
                self._set_state(DEGRADED)
                attempt = 1
                await asyncio.sleep(self._backoff(0))
        except asyncio.CancelledError:
            self._teardown()
            raise

    async def _connect(self) -> None:
        self._generation += 1
        generation = self._generation
        self._lost.clear()
        settings = self.settings
        host, port = await self.endpoint.resolve(limit_seconds=settings.connect_timeout)

        def on_lost(_exc: BaseException | None) -> None:
            if generation == self._generation:
                self._lost.set()

        common: dict[str, Any] = {
            "host": host,
            "port": port,
            "connect_timeout": settings.connect_timeout,
            "ssl_context": self.endpoint.ssl_context(),
            "username": self.endpoint.username,
            "password": self.endpoint.password,
            "on_lost": on_lost,
        }
        self.writer = await resp_connect(on_push=self._on_writer_reply, **common)
        self.reader = await resp_connect(on_push=self._on_reader_push, **common)
        # Re-subscribe everything wanted, in batches, before declaring the link healthy.
        while missing := [ch for ch in self.wanted if ch not in self.confirmed]:
            for start in range(0, len(missing), settings.subscribe_batch):
                waiters = self._send_subscribe(missing[start : start + settings.subscribe_batch])
                async with asyncio.timeout(settings.subscribe_timeout):
                    await asyncio.gather(*waiters)
            if self._lost.is_set():
                raise ConnectionResetError("lost while subscribing")
            self.layer.count("resubscribed", len(missing))

    async def _watch(self) -> None:
        """Return when the connection is lost or a probe goes unanswered."""
        interval = self.settings.probe_interval
        while True:
            try:
                async with asyncio.timeout(interval):
                    await self._lost.wait()
                return
            except TimeoutError:
                pass
            reader, writer = self.reader, self.writer
            if reader is None or writer is None:
                return
            now = self.loop.time()
            if self.in_flight > 0 and now - writer.last_data_at > self.settings.socket_timeout:
                self.layer.count("probe_failures")
                return
            if now - reader.last_data_at < interval:
                continue
            self._pong.clear()
            try:
                reader.write(encode_command(b"PING"))
                async with asyncio.timeout(min(self.settings.socket_timeout, interval * 2)):
                    await self._pong.wait()
            except (OSError, TimeoutError):
                self.layer.count("probe_failures")
                return

    def _teardown(self) -> None:
        self._generation += 1
        if self.in_flight:
            # Written but never acknowledged: their fate is unknown, count them as failed.
            self.layer.count("publish_failures", self.in_flight)
            self.in_flight = 0
        if self._out:
            self.layer.count("publish_failures", len(self._out))
            self._out = []
        for connection in (self.writer, self.reader):
            if connection is not None:
                connection.on_lost = None
                connection.abort()
        self.writer = self.reader = None
        self.confirmed.clear()
        for waiters in self.pending.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self.pending.clear()

    async def close(self) -> None:
        if self.state == HEALTHY:
            # Drain: what was published before close() reaches Redis (bounded wait).
            self._flush()
            # Replies only decrement a count, so poll it briefly (at most about 1 s).
            for _ in range(200):
                if self.in_flight <= 0 or self.writer is None:
                    break
                await asyncio.sleep(0.005)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._set_state(CONNECTING)


class LoopLink:
    """Everything the layer holds for one event loop: its shard links and membership refs."""

    def __init__(
        self,
        *,
        endpoints: list[RedisEndpoint],
        settings: LinkSettings,
        layer: LayerCallbacks,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.thread_id = threading.get_ident()
        self.closed = False
        self.settings = settings
        self.endpoints = endpoints
        self.shards = [
            ShardLink(endpoint=endpoint, settings=settings, layer=layer, loop_link=self)
            for endpoint in endpoints
        ]
        # group -> channels homed on this loop that are members (the subscription refcount).
        self.group_members: dict[str, set[str]] = {}
        self.inbox_subscribed = False
        self._clients: list[aioredis.Redis] | None = None

    @property
    def alive(self) -> bool:
        return not self.closed and not self.loop.is_closed()

    def clients(self) -> list[aioredis.Redis]:
        if self._clients is None:
            self._clients = [
                endpoint.client(
                    socket_timeout=self.settings.socket_timeout,
                    connect_timeout=self.settings.connect_timeout,
                )
                for endpoint in self.endpoints
            ]
        return self._clients

    async def close(self) -> None:
        self.closed = True
        for shard in self.shards:
            await shard.close()
        if self._clients is not None:
            for client in self._clients:
                with contextlib.suppress(Exception):
                    await client.aclose()
            self._clients = None


def run_on_loop(link: LoopLink, make: Callable[[], Any]) -> asyncio.Future[Any]:
    """Run a coroutine on another thread's loop and return an awaitable for this one."""
    future = asyncio.run_coroutine_threadsafe(make(), link.loop)
    return asyncio.wrap_future(future)
