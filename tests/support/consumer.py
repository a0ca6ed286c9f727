"""In-process sockets on the real ASGI stack (``WebsocketCommunicator``), for consumer tests.

``InProcessSocket`` has the same reading API as ``tests.support.ws_client.WsClient``
(``recv_until``, ``request``, ``wait_closed``), reading the application's output queue
directly so that a deadline passing never cancels the consumer under test.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

from channels.testing import WebsocketCommunicator

from tests.support.ws_client import Frame, Predicate

_refs = itertools.count(1)


class SocketClosed(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"socket closed with {code}")
        self.code = code


class InProcessSocket:
    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.frames: list[Frame] = []
        self._pending: list[Frame] = []
        self.close_code: int | None = None
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
        params = []
        if token is not None:
            params.append(f"token={token}")
        if user_id is not None:
            params.append(f"user_id={user_id}")
        path = "/ws/" + (f"?{'&'.join(params)}" if params else "")
        communicator = WebsocketCommunicator(application, path, headers=headers or [])
        socket = cls(communicator)
        connected, code = await communicator.connect(timeout=within)
        socket.accepted = bool(connected)
        if not connected:
            socket.close_code = code
        return socket

    async def _next_output(self, within: float) -> dict[str, Any]:
        return await asyncio.wait_for(self.communicator.output_queue.get(), timeout=within)

    async def send(self, frame: Frame | str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.communicator.send_to(bytes_data=frame)
        else:
            text = frame if isinstance(frame, str) else json.dumps(frame)
            await self.communicator.send_to(text_data=text)

    async def request(self, frame: Frame, *, within: float = 5.0) -> Frame:
        ref = f"r{next(_refs)}"
        await self.send({**frame, "ref": ref})
        return await self.recv_until(lambda f: f.get("ref") == ref, within=within)

    async def recv(self, *, within: float = 5.0) -> Frame:
        """The next unconsumed frame, whatever it is."""
        return await self.recv_until(lambda frame: True, within=within)

    async def recv_until(self, predicate: Predicate, *, within: float = 5.0) -> Frame:
        for index, frame in enumerate(self._pending):
            if predicate(frame):
                return self._pending.pop(index)
        deadline = time.monotonic() + within
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.close_code is not None:
                raise TimeoutError(
                    f"no matching frame within {within}s (close code {self.close_code}); "
                    f"received: {self._pending[-10:]}"
                )
            try:
                output = await self._next_output(remaining)
            except TimeoutError:
                continue
            if output["type"] == "websocket.close":
                self.close_code = output.get("code", 1000)
                raise SocketClosed(self.close_code)
            frame = json.loads(output["text"])
            self.frames.append(frame)
            if predicate(frame):
                return frame
            self._pending.append(frame)

    def unconsumed(self, predicate: Predicate) -> list[Frame]:
        return [frame for frame in self._pending if predicate(frame)]

    async def wait_closed(self, *, within: float = 5.0) -> int | None:
        deadline = time.monotonic() + within
        while self.close_code is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"socket still open after {within}s")
            output = await self._next_output(remaining)
            if output["type"] == "websocket.close":
                self.close_code = output.get("code", 1000)
            else:
                frame = json.loads(output["text"])
                self.frames.append(frame)
                self._pending.append(frame)
        return self.close_code

    async def disconnect(self, code: int = 1000) -> None:
        """The client goes away; waits until the consumer has run its disconnect."""
        if self.communicator.future.done():
            return
        await self.communicator.send_input({"type": "websocket.disconnect", "code": code})
        try:
            await asyncio.wait_for(asyncio.shield(self.communicator.future), timeout=5)
        except TimeoutError:
            self.communicator.future.cancel()
