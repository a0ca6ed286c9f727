"""A WebSocket client for tests against real Daphne instances (the ``websockets`` library).

Every frame received is kept in ``frames``; ``recv_until`` waits for the first frame (new or
already received and not yet consumed) matching a predicate, with a deadline, so a test never
sleeps and never depends on the order of unrelated frames.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

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


class WsClient:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.frames: list[Frame] = []  # every frame received, in order
        self._pending: list[Frame] = []  # received, not yet returned by recv_until

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        token: str | None,
        user_id: str | None = None,
        origin: str | None = None,
        within: float = 5.0,
    ) -> WsClient:
        params = []
        if token is not None:
            params.append(f"token={token}")
        if user_id is not None:
            params.append(f"user_id={user_id}")
        full_url = f"{url}?{'&'.join(params)}" if params else url
        connection = await connect(
            full_url,
            origin=Origin(origin) if origin is not None else None,
            open_timeout=within,
            max_size=None,
            ping_interval=None,
            proxy=None,  # tests only ever reach 127.0.0.1, whatever the environment says
        )
        return cls(connection)

    async def send(self, frame: Frame | str) -> None:
        await self.connection.send(frame if isinstance(frame, str) else json.dumps(frame))

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
            if remaining <= 0:
                raise TimeoutError(
                    f"no matching frame within {within}s; received: {self._pending[-10:]}"
                )
            try:
                raw = await asyncio.wait_for(self.connection.recv(), timeout=remaining)
            except TimeoutError:
                continue
            frame = json.loads(raw)
            self.frames.append(frame)
            if predicate(frame):
                return frame
            self._pending.append(frame)

    def unconsumed(self, predicate: Predicate) -> list[Frame]:
        return [frame for frame in self._pending if predicate(frame)]

    async def wait_closed(self, *, within: float = 5.0) -> int | None:
        """Read until the server closes; its close code."""
        deadline = time.monotonic() + within
        try:
            while time.monotonic() < deadline:
                raw = await asyncio.wait_for(
                    self.connection.recv(), timeout=deadline - time.monotonic()
                )
                frame = json.loads(raw)
                self.frames.append(frame)
                self._pending.append(frame)
        except websockets.ConnectionClosed:
            pass
        except TimeoutError:
            raise TimeoutError(f"socket still open after {within}s") from None
        return self.close_code

    @property
    def close_code(self) -> int | None:
        return self.connection.close_code

    async def close(self) -> None:
        await self.connection.close()
