"""A client that does what a client library does: reconnect on any close and resume.

Used where a test closes or kills sockets under the clients (rebalancing, instance crashes):
``frames`` holds every frame of every connection in order, so ``tests.support.seq_ledger``
counts what the *client* got across reconnects. Resume positions are the highest ``seq`` it
has of each followed conversation (docs/delivery.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import websockets

from tests.support.ws_client import WsClient, frame_is


class ReconnectingClient:
    def __init__(self, url: str, *, token: str, positions: dict[str, int]) -> None:
        self.url = url
        self.token = token
        self.positions = {str(k): int(v) for k, v in positions.items()}
        self._done: list[dict[str, Any]] = []
        self.current: WsClient | None = None
        self.instance_id: str | None = None
        self.close_codes: list[int | None] = []
        self.connects = 0
        self.resumes_refused = 0
        self._stopping = False
        self._connected = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    @property
    def frames(self) -> list[dict[str, Any]]:
        return [*self._done, *(self.current.frames if self.current else [])]

    async def wait_connected(self, *, within: float = 10) -> None:
        async with asyncio.timeout(within):
            await self._connected.wait()

    def _position_update(self, frames: list[dict[str, Any]]) -> None:
        for frame in frames:
            conversation = str(frame.get("conversation_id"))
            if "event_id" in frame and "seq" in frame and conversation in self.positions:
                self.positions[conversation] = max(self.positions[conversation], int(frame["seq"]))

    async def _run(self) -> None:
        while not self._stopping:
            try:
                client = await WsClient.open(self.url, token=self.token, within=5)
            except (OSError, websockets.WebSocketException, TimeoutError):
                await asyncio.sleep(0.1)
                continue
            self.current = client
            try:
                hello = await client.recv_until(frame_is("connected"), within=5)
                self.instance_id = str(hello["instance_id"])
                self.connects += 1
                if self.connects > 1:
                    ack = await client.request({"type": "resume", "positions": self.positions})
                    recovered = [r.get("recovered") for r in ack.get("conversations", {}).values()]
                    self.resumes_refused += recovered.count(False)
                self._connected.set()
                while not self._stopping:
                    await client.drain(within=0.2)
                    self._position_update(client.frames)
            except (websockets.ConnectionClosed, TimeoutError):
                pass
            finally:
                self._position_update(client.frames)
                self._done.extend(client.frames)
                self.current = None
                self.close_codes.append(client.close_code)
                self._connected.clear()
                with contextlib.suppress(Exception):
                    await client.close()

    async def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3):
                await self._task
        if not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
