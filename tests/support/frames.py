"""What the test sockets share: frame predicates, the query that authenticates, and waiting for
a matching frame.

Both test sockets (``ws_client.WsClient`` over real Daphne, ``consumer.InProcessSocket`` on the
in-process ASGI stack) keep every frame received in ``frames``; ``recv_until`` returns the
first frame (new, or received earlier and not yet returned) matching a predicate, with a
deadline, so a test never sleeps and never depends on the order of unrelated frames. Only
how the next frame is read differs, in ``_read_frame``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from chat.event_types import event_check

Frame = dict[str, Any]
Predicate = Callable[[Frame], bool]

_refs = itertools.count(1)


def frame_is(frame_type: str, **fields: Any) -> Predicate:
    """A predicate: a frame of ``frame_type`` whose ``fields`` have exactly these values."""

    def check(frame: Frame) -> bool:
        return frame.get("type") == frame_type and all(
            frame.get(key) == value for key, value in fields.items()
        )

    return check


def auth_query(*, token: str | None, user_id: str | None = None) -> str:
    """``?token=...&user_id=...`` with the parameters given; empty when none is."""
    params = []
    if token is not None:
        params.append(f"token={token}")
    if user_id is not None:
        params.append(f"user_id={user_id}")
    return f"?{'&'.join(params)}" if params else ""


class FrameReader:
    """The reading half of a test socket; subclasses supply ``send`` and ``_read_frame``."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []  # every frame received, in order
        self._pending: list[Frame] = []  # received, not yet returned by recv_until

    async def send(self, frame: Frame) -> None:
        raise NotImplementedError

    async def _read_frame(self, *, within: float) -> Frame:
        """The next frame off the wire; TimeoutError when none comes ``within`` seconds."""
        raise NotImplementedError

    def _can_read(self) -> bool:
        return True

    def _state(self) -> str:
        """Said in a timeout's message, after the deadline."""
        return ""

    def _record(self, frame: Frame) -> None:
        # Every event any test socket receives is checked against its schema (a frame with an
        # event_id is an event; acks, errors and pongs are replies).
        if "event_id" in frame:
            event_check(frame)
        self.frames.append(frame)

    def _keep(self, frame: Frame) -> None:
        """Record a frame read outside ``recv_until``, so a later ``recv_until`` finds it."""
        self._record(frame)
        self._pending.append(frame)

    async def request(self, frame: Frame, *, within: float = 5.0) -> Frame:
        """Send ``frame`` with a fresh ``ref`` and return the reply carrying it."""
        ref = f"r{next(_refs)}"
        await self.send({**frame, "ref": ref})
        return await self.recv_until(lambda f: f.get("ref") == ref, within=within)

    async def recv_until(self, predicate: Predicate, *, within: float = 5.0) -> Frame:
        """The first unconsumed frame matching ``predicate``; TimeoutError at the deadline."""
        for index, frame in enumerate(self._pending):
            if predicate(frame):
                return self._pending.pop(index)
        deadline = time.monotonic() + within
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._can_read():
                raise TimeoutError(
                    f"no matching frame within {within}s{self._state()}; "
                    f"received: {self._pending[-10:]}"
                )
            try:
                frame = await self._read_frame(within=remaining)
            except TimeoutError:
                continue
            self._record(frame)
            if predicate(frame):
                return frame
            self._pending.append(frame)

    def unconsumed(self, predicate: Predicate) -> list[Frame]:
        return [frame for frame in self._pending if predicate(frame)]
