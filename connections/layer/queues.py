"""Bounded per-channel queues with a stated overflow policy; see docs/channel-layer.md.

A queue holds packed messages (msgpack bytes): each receiver unpacks its own copy, so one
consumer mutating a message never affects another, at a fraction of ``deepcopy``'s cost.

Overflow policy, when a message arrives at a full queue:
1. drop the oldest *ephemeral* message queued (typing indicators), if there is one;
2. otherwise drop the oldest message, and count it against the channel (``overflowed``):
   a consumer that keeps overflowing is hopelessly slow, and its owner can close it.
Either way the layer's ``queue_overflows`` counter grows; memory never exceeds the capacity.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connections.layer.loops import LoopLink

# Explicit event ids remembered per channel for duplicate suppression (bounded memory).
SEEN_IDS_PER_CHANNEL = 256

NO_DROP = 0
DROPPED_EPHEMERAL = 1
DROPPED_MESSAGE = 2


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class ChannelQueue:
    """The messages waiting for one channel, and the coroutines waiting for them."""

    __slots__ = (
        "capacity",
        "ephemeral_count",
        "groups",
        "items",
        "link",
        "name",
        "overflowed",
        "seen",
        "seen_order",
        "waiters",
    )

    def __init__(self, name: str, capacity: int, link: LoopLink | None) -> None:
        self.name = name
        self.capacity = capacity
        # (packed message, ephemeral flag)
        self.items: deque[tuple[bytes, bool]] = deque()
        self.ephemeral_count = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.groups: set[str] = set()
        # The event loop link that subscribes to Redis on this channel's behalf.
        self.link = link
        # Messages lost to overflow that were not ephemeral: how far behind the consumer is.
        self.overflowed = 0
        self.seen: set[str] = set()
        self.seen_order: deque[str] = deque()

    def is_duplicate(self, event_id: str) -> bool:
        """Remember ``event_id``; True if this channel has already been given it."""
        if event_id in self.seen:
            return True
        self.seen.add(event_id)
        order = self.seen_order
        order.append(event_id)
        if len(order) > SEEN_IDS_PER_CHANNEL:
            self.seen.discard(order.popleft())
        return False

    def full(self) -> bool:
        return len(self.items) >= self.capacity

    def put(self, payload: bytes, ephemeral: bool) -> int:
        """Queue a message, applying the overflow policy: NO_DROP, DROPPED_EPHEMERAL or
        DROPPED_MESSAGE."""
        items = self.items
        dropped = NO_DROP
        if len(items) >= self.capacity:
            if self.ephemeral_count:
                self._drop_oldest_ephemeral()
                dropped = DROPPED_EPHEMERAL
            else:
                items.popleft()
                self.overflowed += 1
                dropped = DROPPED_MESSAGE
        items.append((payload, ephemeral))
        if ephemeral:
            self.ephemeral_count += 1
        self.wake_one()
        return dropped

    def _drop_oldest_ephemeral(self) -> None:
        items = self.items
        for index, (_, ephemeral) in enumerate(items):
            if ephemeral:
                del items[index]
                self.ephemeral_count -= 1
                return

    def pop(self) -> bytes:
        payload, ephemeral = self.items.popleft()
        if ephemeral:
            self.ephemeral_count -= 1
        return payload

    def wake_one(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters[0]
            if waiter.done():
                waiters.popleft()
                continue
            loop = waiter.get_loop()
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if loop is running:
                waiter.set_result(None)
            elif not loop.is_closed():
                # A sender on another event loop (a thread running async_to_sync).
                loop.call_soon_threadsafe(_wake, waiter)
            waiters.popleft()
            return

    def clear(self) -> None:
        self.items.clear()
        self.ephemeral_count = 0
