"""What the channel layer and the registry show to readers (health, metrics). docs/health.md.

Health only reads: it asks the layer for its status, counters and a bounded check, and the
registry for its counts and a bounded check, through these two declared interfaces. mypy
checks that the real classes satisfy them (``layer_view`` and ``registry_view`` return them
typed as the protocols), so a renamed method breaks the type check, not a probe at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from channels.layers import get_channel_layer

from connections.registry import get_registry
from realtime_layer import RealtimeChannelLayer


class LayerView(Protocol):
    """The channel layer, as health and metrics read it."""

    @property
    def status(self) -> str:
        """``local`` (no Redis), ``healthy`` or ``degraded``."""
        ...

    def counters(self) -> Mapping[str, int | float]:
        """Monotonic counters (published, delivered_local, ...) and gauges (queued, ...)."""
        ...

    async def check(self, timeout: float) -> bool:  # noqa: ASYNC109 (the health interface)
        """A real round trip to every Redis node, answered within ``timeout``."""
        ...


class RegistryView(Protocol):
    """The connection registry, as health and metrics read it."""

    def local_connection_count(self) -> int:
        """Sockets registered by this instance (no round trip)."""
        ...

    async def stats(self) -> dict[str, Any]:
        """``total_connections``, ``unique_users`` and ``instances`` across the cluster."""
        ...

    async def check(self, timeout: float) -> bool:  # noqa: ASYNC109 (the health interface)
        """A real round trip to the registry's store, answered within ``timeout``."""
        ...

    async def check_nodes(self, timeout: float) -> dict[str, bool]:  # noqa: ASYNC109
        """Each node the registry depends on (every master of a cluster), and whether it
        answered within ``timeout``."""
        ...


def layer_view() -> LayerView | None:
    """The configured layer when it is ours; None for another backend (bench comparisons)."""
    layer = get_channel_layer()
    if isinstance(layer, RealtimeChannelLayer):
        return layer
    return None


def registry_view() -> RegistryView:
    return get_registry()
