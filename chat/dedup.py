"""The one place that decides how a socket gets each event id once (docs/events.md#dedup).

One event can reach a socket through several groups (a presence change through every
conversation the socket's user shares with the changed user) and, during a Redis reconnect,
through both the local and the remote path. The socket forwards each ``event_id`` once:

- on a layer that delivers a given ``dedup_key`` (chat sets it to the event id) to a channel
  at most once, and says so with ``delivers_event_ids_once = True`` (the project's
  ``RealtimeChannelLayer``), the layer's memory is the only one: ``socket_seen_ids`` is None;
- on any other layer (Channels' in-memory one, channels_redis swapped in for a comparison)
  the socket keeps a bounded memory of its own, ``SeenIds``.
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_CAPACITY = 1024


class SeenIds:
    """Least-recently-seen ids drop out first; the set never grows past ``capacity``."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, event_id: str) -> bool:
        """True the first time ``event_id`` is offered (and remember it), else False."""
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return False
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._ids)


def socket_seen_ids(layer: object) -> SeenIds | None:
    """A socket's own memory of event ids, or None where ``layer`` already dedups for it."""
    if getattr(layer, "delivers_event_ids_once", False) is True:
        return None
    return SeenIds()
