"""Bounded per-channel queues: overflow policies, expiry, dedup keys; see docs/channel-layer.md.

A queue holds packed messages (msgpack bytes): each receiver unpacks its own copy, so one
consumer mutating a message never affects another, at a fraction of ``deepcopy``'s cost.

``ChannelQueue.offer`` is the one place a message enters a queue, whichever path brought it
(a local ``send``, a local ``group_send``, an envelope from Redis). When the queue is full:

- policy ``"refuse"`` (the default, Channels' rule): the *new* message is refused; nothing
  queued is dropped. The caller turns that into ``ChannelFull`` (a ``send``) or a counted drop
  for that member (a ``group_send``).
- policy ``"close"`` (a WebSocket consumer's own channel): the oldest queued ephemeral message
  is shed; if there is none, the new message is refused, ``{"type": "channel.overflow"}`` goes
  to the head of the queue and everything offered afterwards is dropped: the consumer closes
  the socket and its client resumes from the database.

A message older than the layer's ``expiry`` is never delivered: on a "refuse" channel it is
dropped (counted); on a "close" channel a durable one means the consumer is hopelessly behind,
which overflows the channel as above.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import TYPE_CHECKING

import msgpack

if TYPE_CHECKING:
    from connections.layer.loops import LoopLink

POLICY_REFUSE = "refuse"
POLICY_CLOSE = "close"
POLICIES = (POLICY_REFUSE, POLICY_CLOSE)

# Dedup keys remembered per channel (bounded memory).
SEEN_KEYS_PER_CHANNEL = 256

# What offer() did with a message.
ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REFUSED = "refused"  # full: not queued, nothing else dropped (the sender may be told)
DROPPED = "dropped"  # "close" channel: not queued because it overflowed (now or before)

OVERFLOW_MESSAGE = {"type": "channel.overflow"}
OVERFLOW_MARKER: bytes = msgpack.packb(OVERFLOW_MESSAGE, use_bin_type=True)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class ChannelQueue:
    """The messages waiting for one channel, and the coroutines waiting for them."""

    __slots__ = (
        "capacity",
        "ephemeral_count",
        "expiry",
        "groups",
        "items",
        "last_used",
        "link",
        "name",
        "overflowed",
        "policy",
        "seen",
        "seen_order",
        "waiters",
    )

    def __init__(
        self, name: str, capacity: int, expiry: float, link: LoopLink | None, now: float
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.expiry = expiry
        # (packed message, ephemeral flag, monotonic time it was queued)
        self.items: deque[tuple[bytes, bool, float]] = deque()
        self.ephemeral_count = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.groups: set[str] = set()
        # The event loop link that subscribes to Redis on this channel's behalf.
        self.link = link
        self.policy = POLICY_REFUSE
        # "close" policy only: the overflow marker is queued, everything else is dropped.
        self.overflowed = False
        # When a receiver last looked at this channel: a channel nobody reads is reaped.
        self.last_used = now
        self.seen: set[str] = set()
        self.seen_order: deque[str] = deque()

    def offer(
        self,
        payload: bytes,
        ephemeral: bool,
        dedup_key: str | None,
        now: float,
        counters: dict[str, int],
        delivered: str,
        refused: str,
    ) -> str:
        """Queue one message under the channel's policy; count what happened.

        ``delivered`` names the counter of an accepted message (local or remote path),
        ``refused`` the counter of one a full "refuse" channel turned away.
        """
        if self.overflowed:
            counters["overflow_dropped"] += 1
            counters["queue_overflows"] += 1
            return DROPPED
        if dedup_key is not None and dedup_key in self.seen:
            counters["duplicates_dropped"] += 1
            return DUPLICATE
        items = self.items
        if len(items) >= self.capacity:
            self.expire(now, counters)
        if self.overflowed:  # expiry found a durable message too old to deliver
            counters["overflow_dropped"] += 1
            counters["queue_overflows"] += 1
            return DROPPED
        if len(items) >= self.capacity:
            counters["queue_overflows"] += 1
            if self.policy == POLICY_REFUSE:
                counters[refused] += 1
                return REFUSED
            if self.ephemeral_count:
                self._shed_oldest_ephemeral()
                counters["ephemeral_shed"] += 1
            elif ephemeral:
                counters["ephemeral_shed"] += 1  # shed typing first: the newest one, here
                return DROPPED
            else:
                self._overflow(counters)
                counters["overflow_dropped"] += 1
                return DROPPED
        if dedup_key is not None:
            self._remember(dedup_key)
        items.append((payload, ephemeral, now))
        if ephemeral:
            self.ephemeral_count += 1
        counters[delivered] += 1
        self.wake_one()
        return ACCEPTED

    def pop(self, now: float, counters: dict[str, int]) -> bytes | None:
        """The next deliverable message, or None; expired ones are dropped on the way."""
        self.expire(now, counters)
        if not self.items:
            return None
        payload, ephemeral, _ = self.items.popleft()
        if ephemeral:
            self.ephemeral_count -= 1
        return payload

    def expire(self, now: float, counters: dict[str, int]) -> None:
        """Drop messages older than expiry from the head (the queue is in arrival order)."""
        items = self.items
        limit = now - self.expiry
        while items and items[0][2] < limit:
            _, ephemeral, _ = items.popleft()
            counters["expired"] += 1
            if ephemeral:
                self.ephemeral_count -= 1
            elif self.policy == POLICY_CLOSE:
                self._overflow(counters)
                return

    def newest_age(self, now: float) -> float:
        """Seconds since the newest queued message arrived (inf when none is queued)."""
        for _, _, at in reversed(self.items):
            if at != math.inf:
                return now - at
        return math.inf

    def _overflow(self, counters: dict[str, int]) -> None:
        self.overflowed = True
        counters["overflow_closed"] += 1
        # At the head, never expiring: the consumer learns it first and closes.
        self.items.appendleft((OVERFLOW_MARKER, False, math.inf))
        self.wake_one()

    def _remember(self, dedup_key: str) -> None:
        self.seen.add(dedup_key)
        order = self.seen_order
        order.append(dedup_key)
        if len(order) > SEEN_KEYS_PER_CHANNEL:
            self.seen.discard(order.popleft())

    def _shed_oldest_ephemeral(self) -> None:
        items = self.items
        for index, (_, ephemeral, _) in enumerate(items):
            if ephemeral:
                del items[index]
                self.ephemeral_count -= 1
                return

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
