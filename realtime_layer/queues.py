"""Bounded per-channel queues: overflow policies, expiry, dedup keys; see docs/channel-layer.md.

A queue holds packed messages (msgpack bytes): each receiver unpacks its own copy, so one
consumer mutating a message never affects another, at a fraction of ``deepcopy``'s cost.

``ChannelQueue.enqueue`` is the one place a message enters a queue, whichever path brought it
(a local ``send``, a local ``group_send``, an envelope from Redis). When the queue is full:

- policy ``"refuse"`` (the default, Channels' rule): the *new* message is refused; nothing
  queued is dropped. The caller turns that into ``ChannelFull`` (a ``send``) or a counted drop
  for that member (a ``group_send``).
- policy ``"close"`` (a WebSocket consumer's own channel): the oldest queued ephemeral message
  is shed; if there is none, the new message is refused, ``{"type": "channel.overflow"}`` goes
  to the head of the queue and everything sent to it afterwards is dropped: the consumer closes
  the socket and its client resumes from the database.

A message older than the layer's ``expiry`` is never delivered: on a "refuse" channel it is
dropped (counted); on a "close" channel a durable one means the consumer is hopelessly behind,
which overflows the channel as above.

Memory: every socket has a queue, and most of them are idle and empty most of the time, so a
queue holds no container it does not use: the message deque exists while something is
queued, the waiters' list while someone waits, the dedup memory from the first keyed message
on. Dedup keys are remembered as 16-byte digests (``dedup_digest``), not as the senders'
strings.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import deque
from typing import TYPE_CHECKING

import msgpack

if TYPE_CHECKING:
    from realtime_layer.loops import LoopLink

POLICY_REFUSE = "refuse"
POLICY_CLOSE = "close"
POLICIES = (POLICY_REFUSE, POLICY_CLOSE)

# Dedup keys remembered per channel (bounded memory).
SEEN_KEYS_PER_CHANNEL = 256

# What enqueue() did with a message.
ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REFUSED = "refused"  # full: not queued, nothing else dropped (the sender may be told)
DROPPED = "dropped"  # "close" channel: not queued because it overflowed (now or before)

OVERFLOW_MESSAGE = {"type": "channel.overflow"}
OVERFLOW_MARKER: bytes = msgpack.packb(OVERFLOW_MESSAGE, use_bin_type=True)

# (packed message, ephemeral flag, monotonic time it was queued)
Item = tuple[bytes, bool, float]
# What an empty queue holds in place of a deque (and of a list of waiters): nothing to allocate.
_NOTHING: tuple[()] = ()


def dedup_digest(key: str) -> bytes:
    """The 16 bytes a channel remembers for a dedup key, instead of the key itself.

    A chat event id as ``str(uuid4())`` is an 85-byte object; its digest, 49. Computed once
    per message, not per member. Two keys share a digest with probability 2**-128: less
    likely than two uuid4 event ids (122 random bits) being equal."""
    return hashlib.blake2b(key.encode(), digest_size=16).digest()


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
        "waiters",
    )

    def __init__(
        self, name: str, capacity: int, expiry: float, link: LoopLink | None, now: float
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.expiry = expiry
        # A deque while anything is queued, else the empty tuple (see the module docstring).
        self.items: deque[Item] | tuple[()] = _NOTHING
        self.ephemeral_count = 0
        # Receivers waiting, oldest first: a list while any waits (nearly always one).
        self.waiters: list[asyncio.Future[None]] | tuple[()] = _NOTHING
        self.groups: set[str] = set()
        # The event loop link that subscribes to Redis on this channel's behalf.
        self.link = link
        self.policy = POLICY_REFUSE
        # "close" policy only: the overflow marker is queued, everything else is dropped.
        self.overflowed = False
        # When a receiver last looked at this channel: a channel nobody reads is reaped.
        self.last_used = now
        # The last SEEN_KEYS_PER_CHANNEL dedup digests, oldest first (a dict keeps the order of
        # insertion: one container, not a set and a deque); from the first one on.
        self.seen: dict[bytes, None] | None = None

    def enqueue(
        self,
        payload: bytes,
        ephemeral: bool,
        dedup_key: bytes | None,
        now: float,
        counters: dict[str, int],
        delivered: str,
        refused: str,
    ) -> str:
        """Queue one message under the channel's policy; count what happened.

        ``dedup_key`` is the key's ``dedup_digest``. ``delivered`` names the counter of an
        accepted message (local or remote path), ``refused`` the counter of one a full
        "refuse" channel turned away.
        """
        if self.overflowed:
            counters["overflow_dropped"] += 1
            counters["queue_overflows"] += 1
            return DROPPED
        seen = self.seen
        if dedup_key is not None and seen is not None and dedup_key in seen:
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
        self._queue().append((payload, ephemeral, now))
        if ephemeral:
            self.ephemeral_count += 1
        counters[delivered] += 1
        self.wake_one()
        return ACCEPTED

    def pop(self, now: float, counters: dict[str, int]) -> bytes | None:
        """The next deliverable message, or None; expired ones are dropped on the way."""
        self.expire(now, counters)
        items = self.items
        if not items:
            return None
        assert type(items) is deque  # mypy: a non-empty queue is a deque
        payload, ephemeral, _ = items.popleft()
        if ephemeral:
            self.ephemeral_count -= 1
        if not items:
            self.items = _NOTHING
        return payload

    def expire(self, now: float, counters: dict[str, int]) -> None:
        """Drop messages older than expiry from the head (the queue is in arrival order)."""
        items = self.items
        if not items or items[0][2] >= now - self.expiry:
            return
        assert type(items) is deque
        limit = now - self.expiry
        while items and items[0][2] < limit:
            _, ephemeral, _ = items.popleft()
            counters["expired"] += 1
            if ephemeral:
                self.ephemeral_count -= 1
            elif self.policy == POLICY_CLOSE:
                self._overflow(counters)
                return
        if not items:
            self.items = _NOTHING

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
        self._queue().appendleft((OVERFLOW_MARKER, False, math.inf))
        self.wake_one()

    def _queue(self) -> deque[Item]:
        items = self.items
        if type(items) is deque:
            return items
        queue: deque[Item] = deque()
        self.items = queue
        return queue

    def _remember(self, dedup_key: bytes) -> None:
        seen = self.seen
        if seen is None:
            seen = self.seen = {}
        seen[dedup_key] = None
        if len(seen) > SEEN_KEYS_PER_CHANNEL:
            del seen[next(iter(seen))]

    def add_waiter(self, waiter: asyncio.Future[None]) -> None:
        waiters = self.waiters
        if type(waiters) is list:
            waiters.append(waiter)
        else:
            self.waiters = [waiter]

    def remove_waiter(self, waiter: asyncio.Future[None]) -> None:
        waiters = self.waiters
        if type(waiters) is list:
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self.waiters = _NOTHING

    def _shed_oldest_ephemeral(self) -> None:
        items = self._queue()
        for index, (_, ephemeral, _) in enumerate(items):
            if ephemeral:
                del items[index]
                self.ephemeral_count -= 1
                return

    def wake_one(self) -> None:
        waiters = self.waiters
        if type(waiters) is not list:
            return
        while waiters:
            waiter = waiters[0]
            if waiter.done():
                del waiters[0]
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
            del waiters[0]
            break
        if not waiters:
            self.waiters = _NOTHING
