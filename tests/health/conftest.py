"""Fixtures for the health tests: a fresh health cache and drain state for every test."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from channels.layers import channel_layers

from connections.lifecycle import drain_reset
from connections.registry import reset_registry
from health.checks import health_cache
from health.metrics_access import snapshot_cache


@pytest.fixture(autouse=True)
def fresh_health() -> Iterator[None]:
    health_cache.clear()
    snapshot_cache.clear()
    drain_reset()
    reset_registry()
    yield
    health_cache.clear()
    drain_reset()
    reset_registry()
    channel_layers.backends.clear()


@pytest.fixture
def realtime(settings: Any) -> Callable[..., None]:
    """``realtime(REDIS_URL=...)``: change REALTIME knobs (and the layer that follows them)."""

    def apply(**values: Any) -> None:
        settings.REALTIME = {**settings.REALTIME, **values}
        if "REDIS_URL" in values:
            config = dict(settings.CHANNEL_LAYERS["default"])
            config["CONFIG"] = {**config.get("CONFIG", {}), "hosts": values["REDIS_URL"]}
            settings.CHANNEL_LAYERS = {"default": config}
        reset_registry()
        channel_layers.backends.clear()

    return apply


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a hung dependency)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(timeout=2)
    for conn in held:
        conn.close()
    server.close()
