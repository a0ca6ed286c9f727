"""A WebSocket client for tests against real Daphne instances (the ``websockets`` library).

Every frame received is kept in ``frames``; ``recv_until`` waits for the first frame (new or
already received and not yet consumed) matching a predicate, with a deadline, so a test never
sleeps and never depends on the order of unrelated frames (``tests.support.frames``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State
from websockets.typing import Origin

from tests.support.frames import Frame, FrameReader, Predicate, auth_query, frame_is

__all__ = ["Frame", "Predicate", "WsClient", "frame_is"]


class WsClient(FrameReader):
    def __init__(self, connection: ClientConnection) -> None:
        super().__init__()
        self.connection = connection

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        token: str | None,
        user_id: str | None = None,
        origin: str | None = None,
        cookie: str | None = None,
        within: float = 5.0,
    ) -> WsClient:
        connection = await connect(
            url + auth_query(token=token, user_id=user_id),
            origin=Origin(origin) if origin is not None else None,
            additional_headers={"Cookie": cookie} if cookie is not None else None,
            open_timeout=within,
            max_size=None,
            ping_interval=None,
            proxy=None,  # tests only ever reach 127.0.0.1, whatever the environment says
        )
        return cls(connection)

    async def send(self, frame: Frame | str) -> None:
        await self.connection.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def _read_frame(self, *, within: float) -> Frame:
        async with asyncio.timeout(within):
            frame: Frame = json.loads(await self.connection.recv())
        return frame

    async def drain(self, *, within: float = 0.2) -> None:
        """Read whatever arrives within ``within`` seconds into ``frames`` (to count duplicates)."""
        deadline = time.monotonic() + within
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                self._keep(await self._read_frame(within=remaining))
            except TimeoutError:
                return

    async def wait_closed(self, *, within: float = 5.0) -> int | None:
        """Read until the server closes; its close code. TimeoutError if it is still open."""
        deadline = time.monotonic() + within
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                self._keep(await self._read_frame(within=remaining))
        except websockets.ConnectionClosed:
            return self.close_code
        except TimeoutError:
            pass
        raise TimeoutError(f"socket still open after {within}s")

    @property
    def is_open(self) -> bool:
        return self.connection.state is State.OPEN

    @property
    def close_code(self) -> int | None:
        """The code the server closed with; 1006 when the connection just dropped."""
        return self.connection.close_code

    async def close(self) -> None:
        await self.connection.close()


def upgrade_request_send(sock: socket.socket, *, port: int, token: str) -> None:
    """Write a WebSocket upgrade request by hand on a connected socket (tests that must control
    the TCP side: a tiny receive window, or requests held back and sent together)."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/?token={token} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
