"""This instance's identity and background loops. See docs/registry.md.

``instance_start()`` is called on every connect and by the health view, and starts the loops
once per event loop: the registry heartbeat (which also replays this instance's sockets after
Redis lost them), the reaper of lapsed instances, and every loop another app registered with
``register_background_task`` (presence registers its deadline, retry and reconciliation loops).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from connections.registry import get_registry
from connections.status import layer_view
from realtime_project.conf import realtime_settings

logger = logging.getLogger(__name__)

TaskFactory = Callable[[], Coroutine[Any, Any, None]]
ReapListener = Callable[[list[str]], Awaitable[None]]

_lock = threading.Lock()
_factories: list[tuple[str, TaskFactory]] = []
_reap_listeners: list[ReapListener] = []
_running: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[asyncio.Task[None]]] = (
    weakref.WeakKeyDictionary()
)
# A loop that crashed is restarted after this pause rather than hammering a failing backend.
RESTART_DELAY_SECONDS = 1.0


def instance_id() -> str:
    return realtime_settings.INSTANCE_ID


def register_background_task(factory: TaskFactory, *, name: str | None = None) -> None:
    """Run ``factory()`` as a background loop on every event loop that starts the instance.

    Registering the same name again replaces the earlier factory (``AppConfig.ready`` may run
    more than once in tests).
    """
    label = name or str(getattr(factory, "__qualname__", repr(factory)))
    with _lock:
        _factories[:] = [(n, f) for n, f in _factories if n != label]
        _factories.append((label, factory))


def register_reap_listener(listener: ReapListener) -> None:
    """Be told which users lost connections when a dead instance was reaped."""
    with _lock:
        if listener not in _reap_listeners:
            _reap_listeners.append(listener)


async def instance_start() -> None:
    """Start the background loops on the running event loop, once."""
    loop = asyncio.get_running_loop()
    with _lock:
        if loop in _running:
            return
        factories = [("registry-heartbeat", _heartbeat_loop), ("registry-reaper", _reaper_loop)]
        factories += list(_factories)
        # A fresh context: the caller may be inside asgiref's sync bridge, whose executor
        # context variables would outlive their thread and break later sync_to_async calls.
        tasks = [
            loop.create_task(_supervised(n, f), name=f"instance:{n}", context=contextvars.Context())
            for n, f in factories
        ]
        _running[loop] = tasks


async def instance_stop() -> None:
    """Cancel this event loop's background loops and wait until they have stopped."""
    loop = asyncio.get_running_loop()
    with _lock:
        tasks = _running.pop(loop, [])
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def instance_running() -> bool:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    return loop in _running


async def _supervised(name: str, factory: TaskFactory) -> None:
    while True:
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("background loop %s crashed; restarting", name)
            await asyncio.sleep(RESTART_DELAY_SECONDS)


def _layer_counters() -> dict[str, float]:
    layer = layer_view()
    if layer is None:
        return {}
    return {name: float(value) for name, value in layer.counters().items()}


async def _heartbeat_loop() -> None:
    while True:
        try:
            # GET /api/connections/stats sums these from Redis instead of asking instances;
            # they ride in the heartbeat's own pipeline.
            await get_registry().heartbeat(counters=_layer_counters())
        except Exception:
            logger.exception("registry heartbeat failed")
        await asyncio.sleep(realtime_settings.HEARTBEAT_INTERVAL_SECONDS)


async def reap_once() -> list[str]:
    """Reap lapsed instances and tell the listeners (presence) whose sockets went with them."""
    users = await get_registry().reap_dead_instances()
    if users:
        for listener in list(_reap_listeners):
            try:
                await listener(users)
            except Exception:
                logger.exception("reap listener %r failed", listener)
    return users


async def _reaper_loop() -> None:
    while True:
        await asyncio.sleep(realtime_settings.HEARTBEAT_INTERVAL_SECONDS)
        try:
            await reap_once()
        except Exception:
            logger.exception("reaper failed")
