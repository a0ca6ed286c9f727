"""A bounded memory of the event ids one socket has already received (docs/events.md).

One event can reach a socket through several groups (a presence change through every
conversation the socket's user shares with the changed user) and, during a Redis reconnect,
through both the local and the remote path. The socket forwards each ``event_id`` once.
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
