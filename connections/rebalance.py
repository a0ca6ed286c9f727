"""Rebalancing: an instance far above the cluster's mean hands sockets back to the balancer.

See docs/scaling.md ("Rebalancing"). After a crash the survivors hold every socket, and a
WebSocket never moves on its own: an instance that comes back, or a new one, would stay empty
while the others stay full. So every instance, every ``REBALANCE_INTERVAL_SECONDS``, reads the
registry's per-instance connection counts (one ``HLEN`` per live instance) and, when it holds
more than ``ceil(mean * (1 + REBALANCE_THRESHOLD))``, closes what it holds above the mean (its
oldest sockets, if at least ``REBALANCE_MIN_SURPLUS``) with ``1012``, at most
``REBALANCE_CLOSE_RATE`` a second. The clients reconnect through the balancer (``leastconn``
sends them to the emptiest instance) and resume: nothing durable is lost
(docs/delivery.md).

It never acts on a view it cannot trust: not while the registry or the layer is degraded, not
while this instance drains, not with fewer than two live instances.
"""

from __future__ import annotations

import asyncio
import logging
import math

from connections.lifecycle import drain_is_active
from connections.registry import get_registry
from connections.sockets import local_sockets
from connections.status import layer_view
from realtime_project.close_codes import WS_1012_SERVICE_RESTART
from realtime_project.conf import realtime_settings

logger = logging.getLogger(__name__)


def rebalance_surplus(counts: dict[str, int], me: str, threshold: float, minimum: int = 1) -> int:
    """How many sockets ``me`` should hand back.

    ``counts`` holds every live instance (``me`` included). Nothing while ``me`` holds at most
    ``ceil(mean * (1 + threshold))``; above that, everything above ``ceil(mean)``: the
    threshold decides *when* to act, the mean *how far* (a hysteresis, so an instance that just
    came back is filled to its share, not to the edge of the threshold, and counts that differ
    by rounding never churn). A surplus below ``minimum`` is left alone: a handful of sockets
    is not worth a reconnect.
    """
    if len(counts) < 2 or me not in counts:
        return 0
    mean = sum(counts.values()) / len(counts)
    if counts[me] <= math.ceil(mean * (1 + max(0.0, threshold))):
        return 0
    surplus = counts[me] - math.ceil(mean)
    return surplus if surplus >= max(1, minimum) else 0


async def rebalance_once() -> int:
    """One pass: close this instance's surplus, at the configured rate; how many were closed."""
    rate = realtime_settings.REBALANCE_CLOSE_RATE
    if rate <= 0 or drain_is_active():
        return 0
    registry = get_registry()
    layer = layer_view()
    if registry.degraded or (layer is not None and layer.status == "degraded"):
        return 0
    counts = await registry.instance_connection_counts()
    if not counts:
        return 0
    me = registry.instance_id
    counts[me] = local_sockets.count()  # local truth: the registry may be a write behind
    surplus = rebalance_surplus(
        counts,
        me,
        realtime_settings.REBALANCE_THRESHOLD,
        realtime_settings.REBALANCE_MIN_SURPLUS,
    )
    interval = realtime_settings.REBALANCE_INTERVAL_SECONDS
    budget = min(surplus, max(1, math.floor(rate * interval)))
    if budget <= 0:
        return 0
    logger.info(
        "rebalance: %s holds %d of %d sockets on %d instances; closing %d with 1012",
        me,
        counts[me],
        sum(counts.values()),
        len(counts),
        budget,
    )
    closed = 0
    # Closes are spread at ``rate`` per second, in tenths of a second: the balancer sees the
    # reconnections arrive over the interval, not in one burst.
    step = max(1, math.ceil(rate / 10))
    for socket in local_sockets.snapshot()[:budget]:
        if drain_is_active():
            break
        try:
            await socket.server_close(code=WS_1012_SERVICE_RESTART)
        except Exception as exc:
            logger.warning("rebalance: closing a socket failed: %r", exc)
            continue
        closed += 1
        if closed % step == 0:
            await asyncio.sleep(step / rate)
    return closed


async def rebalance_loop() -> None:
    while True:
        await asyncio.sleep(realtime_settings.REBALANCE_INTERVAL_SECONDS)
        await rebalance_once()
