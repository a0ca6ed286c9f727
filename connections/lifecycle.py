"""The instance's lifecycle under a server: start-up, and draining on SIGTERM. docs/health.md.

Start-up: ``instance_lifecycle`` wraps the ASGI application and starts the instance's
background loops (``connections.instance.instance_start``: heartbeat, reaper, presence loops)
from the first request on each event loop, so an instance with no sockets yet still
heartbeats once its load balancer has probed it. They start from a clean context, not from
inside a request's thread bridge, whose executor is gone once the request ends.

Draining, the sequence: report ``unhealthy`` at once (the load balancer stops sending new
sockets), wait ``DRAIN_DELAY_SECONDS`` for it to notice, close this instance's sockets with
1012 in batches of ``DRAIN_BATCH_SIZE``, at most ``DRAIN_CLOSE_RATE`` a second (their clients
reconnect through the balancer to the
other instances, within the presence grace period, so their users never show offline), let
the work already started finish (bounded), remove this instance's registry entries at once
instead of waiting for its lease to lapse, and stop the process, which then has
``DRAIN_EXIT_GRACE_SECONDS`` to end by itself before ``exit_watchdog`` ends it.

Daphne runs Twisted's asyncio reactor, which installs its own SIGTERM handler (stop at once)
when it starts; ``drain_install_on_reactor`` replaces it with ours once the reactor runs. A
second SIGTERM skips the remaining delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from channels.layers import get_channel_layer

from connections.instance import instance_start, instance_stop
from connections.registry import get_registry
from connections.sockets import sockets_close_all
from realtime_layer import RealtimeChannelLayer
from realtime_project.close_codes import WS_1012_SERVICE_RESTART
from realtime_project.conf import realtime_settings
from realtime_project.database import database_calls_running
from realtime_project.runtime.asgi_types import ASGIApp, Receive, Scope, Send
from realtime_project.runtime.daphne import daphne_reactor_loop, daphne_running_applications
from realtime_project.runtime.exit_watchdog import exit_watchdog_arm

logger = logging.getLogger(__name__)

# How long closed sockets get to finish their disconnect handlers, and the server's other
# application instances their work in flight, before the registry sweep and the stop.
DRAIN_SETTLE_SECONDS = 2.0
# Stopping the instance's loops and the channel layer: bounded, the process is going anyway.
DRAIN_SHUTDOWN_SECONDS = 1.0
# From the reactor's stop to the process's end, whatever threads are left (exit_watchdog).
DRAIN_EXIT_GRACE_SECONDS = 1.0


class _DrainState:
    def __init__(self) -> None:
        self.active = False
        self.started_at: float | None = None
        self._hurry: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None


_state = _DrainState()


async def instance_start_quietly() -> None:
    """Start the instance's loops (once per event loop); a failure is logged, never raised."""
    try:
        await instance_start()
    except Exception:
        logger.exception("starting the instance's loops failed")


def instance_lifecycle(app: ASGIApp) -> ASGIApp:
    """``app`` with the instance's loops started before its first HTTP request is answered."""

    async def lifecycle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await instance_start_quietly()
        await app(scope, receive, send)

    return lifecycle


def drain_is_active() -> bool:
    """True from the first SIGTERM on: health answers 503, new sockets should be refused."""
    return _state.active


def drain_reset() -> None:
    """Forget a drain (tests)."""
    global _state
    _state = _DrainState()


def drain_begin() -> None:
    """Turn unhealthy now; everything else happens in ``drain_run``."""
    if not _state.active:
        _state.active = True
        _state.started_at = time.monotonic()
        logger.warning("draining", extra={"fields": {"event": "drain_started"}})


async def _wait_delay(delay: float) -> None:
    hurry = _state._hurry = asyncio.Event()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await hurry.wait()


async def _wait_sockets_gone(limit_seconds: float) -> None:
    step = 0.05
    for _ in range(max(1, int(limit_seconds / step))):
        if not get_registry().local_connection_count():
            return
        await asyncio.sleep(step)


async def _wait_database_idle(limit_seconds: float) -> None:
    """Let database calls already running on threads finish: one whose socket has closed still
    commits, then emits through the event loop, which must still be running then."""
    step = 0.02
    for _ in range(max(1, int(limit_seconds / step))):
        if not database_calls_running():
            return
        await asyncio.sleep(step)
    logger.warning(
        "drain: database calls still running at the stop",
        extra={"fields": {"event": "drain_database_busy", "count": database_calls_running()}},
    )


async def _wait_applications_done(limit_seconds: float) -> None:
    """Let the server's application instances finish what they started (a frame's database
    write and its emit after commit), so that no thread is left calling into a stopped loop."""
    running = daphne_running_applications()
    if not running or limit_seconds <= 0:
        return
    _, still = await asyncio.wait(running, timeout=limit_seconds)
    if still:
        logger.warning(
            "drain: application instances still running at the stop",
            extra={"fields": {"event": "drain_applications_left", "count": len(still)}},
        )


async def drain_run(
    *,
    delay_seconds: float | None = None,
    batch_size: int | None = None,
    close_rate: float | None = None,
) -> int:
    """Drain this instance (everything but stopping the process); return the sockets closed."""
    drain_begin()
    delay = realtime_settings.DRAIN_DELAY_SECONDS if delay_seconds is None else float(delay_seconds)
    size = realtime_settings.DRAIN_BATCH_SIZE if batch_size is None else int(batch_size)
    rate = realtime_settings.DRAIN_CLOSE_RATE if close_rate is None else float(close_rate)
    if delay > 0:
        await _wait_delay(delay)
    closed = await sockets_close_all(code=WS_1012_SERVICE_RESTART, batch_size=size, rate=rate)
    settle_until = time.monotonic() + DRAIN_SETTLE_SECONDS
    await _wait_sockets_gone(DRAIN_SETTLE_SECONDS)
    await _wait_applications_done(settle_until - time.monotonic())
    await _wait_database_idle(max(0.0, settle_until - time.monotonic()))
    registry = get_registry()
    try:
        await registry.remove_instance()
    except Exception:
        # The lease lapses anyway and a survivor reaps what is left.
        logger.exception("drain: removing this instance's registry entries failed")
    elapsed = time.monotonic() - (_state.started_at or time.monotonic())
    logger.warning(
        "drained",
        extra={"fields": {"event": "drain_done", "closed": closed, "seconds": round(elapsed, 3)}},
    )
    return closed


async def _shutdown_instance() -> None:
    try:
        await instance_stop()
    except Exception:
        logger.exception("drain: stopping the instance's loops failed")
    try:
        layer = get_channel_layer()
        # Another backend (bench comparisons) keeps its own connections until the process ends.
        if isinstance(layer, RealtimeChannelLayer):
            await layer.close()
    except Exception:
        logger.exception("drain: closing the channel layer failed")


async def drain_and_exit(stop: Callable[[], None]) -> None:
    """The whole SIGTERM sequence, then ``stop()`` (the reactor's stop under Daphne)."""
    try:
        await drain_run()
        # Not ``asyncio.timeout``: it waits for the cancelled shutdown to finish, and a loop stuck
        # in Redis reconnects (Redis down) can take far longer than the bound to notice.
        shutdown = asyncio.ensure_future(_shutdown_instance())
        done, _ = await asyncio.wait({shutdown}, timeout=DRAIN_SHUTDOWN_SECONDS)
        if not done:
            shutdown.cancel()
            logger.warning("drain: stopping the loops and the layer took too long")
    finally:
        stop()


def drain_hurry() -> None:
    """Skip what is left of the drain delay (a second SIGTERM does this)."""
    if _state._hurry is not None:
        _state._hurry.set()


def _on_sigterm(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
    if _state.task is not None and not _state.task.done():
        # A second SIGTERM: the operator is in a hurry.
        drain_hurry()
        return
    drain_begin()
    _state.task = loop.create_task(drain_and_exit(stop), name="drain")


def drain_install_signal_handler(
    loop: asyncio.AbstractEventLoop, *, stop: Callable[[], None]
) -> None:
    """Handle SIGTERM on ``loop`` with the drain sequence, then ``stop()``."""
    loop.add_signal_handler(signal.SIGTERM, _on_sigterm, loop, stop)
    logger.info("SIGTERM drains this instance", extra={"fields": {"event": "drain_armed"}})


def drain_install_on_reactor() -> bool:
    """Under Daphne, arm the drain handler once the Twisted reactor runs; False elsewhere.

    Only acts when Daphne has already installed the reactor, so importing the ASGI app in
    tests or management commands never installs a reactor as a side effect.
    """
    if "twisted.internet.reactor" not in sys.modules:
        return False
    # Imported here, not at the top: importing it installs Twisted's default reactor when
    # none is installed yet, which must never happen outside Daphne.
    from twisted.internet import reactor as twisted_reactor

    reactor: Any = twisted_reactor
    loop = daphne_reactor_loop(reactor)
    if loop is None:
        return False

    def stop() -> None:
        if reactor.running:
            exit_watchdog_arm(DRAIN_EXIT_GRACE_SECONDS)
            reactor.stop()

    def stop_soon() -> None:
        assert loop is not None
        loop.call_soon(stop)

    def arm() -> None:
        assert loop is not None
        # After Twisted's own handlers, which the "startup" trigger has just installed.
        loop.call_soon(functools.partial(drain_install_signal_handler, loop, stop=stop_soon))

    reactor.callWhenRunning(arm)
    return True
