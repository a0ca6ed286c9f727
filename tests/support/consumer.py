"""In-process sockets on the real ASGI stack (``WebsocketCommunicator``), for consumer tests.

``InProcessSocket`` has the same reading API as ``tests.support.ws_client.WsClient``
(``recv_until``, ``request``, ``wait_closed``; the shared part is ``tests.support.frames``),
reading the application's output queue directly so that a deadline passing never cancels the
consumer under test.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from channels.testing import WebsocketCommunicator

from tests.support.frames import Frame, FrameReader, auth_query


class SocketClosed(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"socket closed with {code}")
        self.code = code


class InProcessSocket(FrameReader):
    def __init__(self, communicator: WebsocketCommunicator) -> None:
        super().__init__()
        self.communicator = communicator
        self.close_code: int | None = None
        self.close_reason = ""
        self.accepted = False

    @classmethod
    async def open(
        cls,
        application: Any,
        *,
        token: str | None,
        user_id: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        within: float = 5.0,
    ) -> InProcessSocket:
        path = "/ws/" + auth_query(token=token, user_id=user_id)
        communicator = WebsocketCommunicator(application, path, headers=headers or [])
        socket = cls(communicator)
        connected, code = await communicator.connect(timeout=within)
        socket.accepted = bool(connected)
        if not connected:
            socket.close_code = code
        return socket

    async def _next_output(self, within: float) -> dict[str, Any]:
        async with asyncio.timeout(within):
            return await self.communicator.output_queue.get()

    async def send(self, frame: Frame | str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.communicator.send_to(bytes_data=frame)
        else:
            text = frame if isinstance(frame, str) else json.dumps(frame)
            await self.communicator.send_to(text_data=text)

    async def _read_frame(self, *, within: float) -> Frame:
        output = await self._next_output(within)
        if output["type"] == "websocket.close":
            self.close_code = output.get("code", 1000)
            raise SocketClosed(self.close_code)
        frame: Frame = json.loads(output["text"])
        return frame

    def _can_read(self) -> bool:
        return self.close_code is None

    def _state(self) -> str:
        return f" (close code {self.close_code})"

    async def recv(self, *, within: float = 5.0) -> Frame:
        """The next unconsumed frame, whatever it is."""
        return await self.recv_until(lambda frame: True, within=within)

    async def wait_closed(self, *, within: float = 5.0) -> int | None:
        deadline = time.monotonic() + within
        while self.close_code is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"socket still open after {within}s")
            output = await self._next_output(remaining)
            if output["type"] == "websocket.close":
                self.close_code = output.get("code", 1000)
                self.close_reason = output.get("reason") or ""
            else:
                self._keep(json.loads(output["text"]))
        return self.close_code

    async def disconnect(self, code: int = 1000) -> None:
        """The client goes away; waits until the consumer has run its disconnect."""
        if self.communicator.future.done():
            return
        await self.communicator.send_input({"type": "websocket.disconnect", "code": code})
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(self.communicator.future)
        except TimeoutError:
            self.communicator.future.cancel()
