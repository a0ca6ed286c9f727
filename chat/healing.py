"""Healing while connected: each instance delivers the durable events its sockets missed.

Design note: docs/delivery.md. Live delivery rides on Redis and can lose an event (an outage,
a dropped subscriber connection, a publish that failed). The database cannot: every durable
event is in the log with its ``seq``. So every instance runs one loop that compares, for the
conversations of its local sockets, how far each socket got (its cursor's ``high``) with the
conversation's ``last_seq``, reads what is missing from the log in one query, and hands it to
the sockets through their own channel, where the consumer's normal path drops what it already
has. The client does nothing.

The loop runs every ``HEAL_INTERVAL_SECONDS``, and at once when the channel layer says its
Redis link came back. On the periodic pass a socket is healed only up to the ``last_seq``
seen by the *previous* pass: an event committed a moment ago is normally still on its way
live, and fetching it as well would only be wasted work. Nor is a socket whose cursor moved
since the previous pass: live events are reaching it, and the first one after a hole makes
it fill the hole from the log itself. Handing a busy socket the events already queued for it
only filled its queue, until a burst of writes closed sockets that were merely behind (4008).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from prometheus_client import Counter, Gauge

from chat import selectors
from chat.delivery import Positions
from chat.event_types import frame_time
from chat.layer_messages import (
    RealtimeEvent,
    RealtimeJoin,
    realtime_event_message,
    realtime_join_message,
)
from chat.metrics import registry
from realtime_layer import RealtimeChannelLayer
from realtime_project.close_codes import WS_4008_SLOW_CONSUMER
from realtime_project.conf import realtime_settings
from realtime_project.database import database_async

logger = logging.getLogger(__name__)


class HealTarget(Protocol):
    channel_name: str
    user_id: str
    positions: Positions

    async def server_close(self, *, code: int) -> None: ...


class _LoopState:
    def __init__(self) -> None:
        self.targets: dict[str, HealTarget] = {}
        self.wake = asyncio.Event()
        self.previous: dict[str, int] = {}
        # (channel, conversation) -> the socket's cursor at the previous periodic pass.
        self.highs: dict[tuple[str, str], int] = {}
        self.passes = 0
        # Durable events the last pass found missing from sockets that still follow them.
        self.owed = 0


_states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
    weakref.WeakKeyDictionary()
)


def _state() -> _LoopState:
    loop = asyncio.get_running_loop()
    state = _states.get(loop)
    if state is None:
        state = _states[loop] = _LoopState()
    return state


def healing_register(target: HealTarget) -> None:
    _state().targets[target.channel_name] = target


def healing_unregister(target: HealTarget) -> None:
    _state().targets.pop(target.channel_name, None)


# The periodic pass also looks for conversations a socket should follow but does not (its
# user was added while live delivery was away) every this many passes.
MEMBERSHIP_EVERY_PASSES = 5


async def heal_once(*, fully: bool) -> int:
    """One pass over this event loop's sockets; how many events were handed to sockets."""
    state = _state()
    targets = list(state.targets.values())
    if not targets:
        state.previous = {}
        state.owed = 0
        return 0
    state.passes += 1
    handed = 0
    if fully or state.passes % MEMBERSHIP_EVERY_PASSES == 0:
        handed += await _memberships_heal(targets)
        _handed.inc(handed)
    conversation_ids = {cid for target in targets for cid in target.positions.cursors}
    current = await database_async(selectors.conversation_last_seqs)(
        conversation_ids=conversation_ids
    )
    goal = (
        current
        if fully
        else {cid: min(seq, current.get(cid, 0)) for cid, seq in state.previous.items()}
    )
    state.previous = current
    highs = {
        (target.channel_name, cid): cursor.high
        for target in targets
        for cid, cursor in target.positions.cursors.items()
    }
    previous_highs, state.highs = state.highs, highs
    behind: dict[str, list[tuple[HealTarget, int]]] = {}
    for (channel, cid), high in highs.items():
        moving = not fully and previous_highs.get((channel, cid), high) != high
        if high < goal.get(cid, 0) and not moving:
            behind.setdefault(cid, []).append((state.targets[channel], high))
    state.owed = sum(goal[cid] - high for cid, items in behind.items() for _, high in items)
    if not behind:
        return handed
    limit = realtime_settings.RESUME_MAX_EVENTS
    logged = await database_async(selectors.events_after)(
        positions={cid: min(high for _, high in items) for cid, items in behind.items()},
        limit_per_conversation=limit,
    )
    layer = get_channel_layer()
    assert layer is not None
    for cid, items in behind.items():
        for target, high in items:
            for entry in logged.get(cid, [])[:limit]:
                if entry.seq <= high:
                    continue
                message = realtime_event_message(
                    entry.frame,
                    exclude_channel=entry.origin_channel or None,
                    emitted_at=frame_time(entry.frame),
                )
                try:
                    await layer.send(target.channel_name, message)
                except ChannelFull:
                    # Too far behind to catch up in its queue: the client resumes instead.
                    await target.server_close(code=WS_4008_SLOW_CONSUMER)
                    break
                handed += 1
                _handed.inc()
    if handed:
        logger.info("healing handed %d missed events to local sockets", handed)
    return handed


async def _memberships_heal(targets: list[HealTarget]) -> int:
    """Make sockets follow conversations their user joined while the news was lost.

    The socket is handed the logged ``member`` event that added its user (it follows from
    there, and the next pass fills in what came after), or, for a user who was there from a
    new conversation's start, told to follow it from ``seq`` 0.
    """
    members = await database_async(selectors.memberships_of)(
        user_ids={target.user_id for target in targets}
    )
    missing = [
        (target, cid)
        for target in targets
        for cid in members.get(target.user_id, set())
        if cid not in target.positions
    ]
    if not missing:
        return 0
    added = await database_async(selectors.member_added_events)(
        pairs={(target.user_id, cid) for target, cid in missing}
    )
    layer = get_channel_layer()
    assert layer is not None
    for target, cid in missing:
        entry = added.get((target.user_id, cid))
        message: RealtimeEvent | RealtimeJoin = (
            realtime_event_message(entry.frame)
            if entry is not None
            else realtime_join_message(conversation_id=cid, seq=0)
        )
        try:
            await layer.send(target.channel_name, message)
        except ChannelFull:
            await target.server_close(code=WS_4008_SLOW_CONSUMER)
    return len(missing)


async def healing_loop() -> None:
    """The instance's healing loop (started by ``connections.instance`` on each event loop)."""
    state = _state()
    layer = get_channel_layer()
    remove = (
        layer.add_recovery_listener(state.wake.set)
        if isinstance(layer, RealtimeChannelLayer)
        else None
    )
    try:
        while True:
            interval = realtime_settings.HEAL_INTERVAL_SECONDS
            try:
                async with asyncio.timeout(interval):
                    await state.wake.wait()
                fully = True
            except TimeoutError:
                fully = False
            state.wake.clear()
            try:
                await heal_once(fully=fully)
            except Exception:
                # The database is down: the next pass tries again; nothing is lost meanwhile.
                logger.exception("healing pass failed")
    finally:
        if remove is not None:
            remove()


def heal_backlog() -> int:
    """Durable events the last healing pass of each running event loop found owed to its
    sockets (a closed loop's sockets are gone, and owed nothing)."""
    return sum(state.owed for loop, state in list(_states.items()) if not loop.is_closed())


_backlog = Gauge(
    "realtime_heal_backlog",
    "Durable events this instance's healing found missing from its live sockets at its last "
    "pass (every HEAL_INTERVAL_SECONDS) and is delivering from the database. Zero while live "
    "delivery loses nothing; above zero pass after pass, healing is not catching up.",
    registry=registry,
)
_backlog.set_function(heal_backlog)
_handed = Counter(
    "realtime_heal_events_handed",
    "Missed durable events healing handed to this instance's sockets (a socket that got one "
    "live meanwhile drops it as a duplicate).",
    registry=registry,
)
