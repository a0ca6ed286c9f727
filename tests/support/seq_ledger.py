"""Count, per socket, the durable events it is owed against what it received.

A test records every ``seq`` it made in a conversation (``owe``); each socket's frames are then
judged by ``report``: which owed seqs never came (``lost``), which came more than once
(``duplicated``), and whether they came in ``seq`` order. ``SocketPump`` keeps reading a set of
sockets in the background so nothing waits unread while a test does something else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import websockets

from tests.support.ws_client import WsClient


class HasFrames(Protocol):
    """A test socket, or a reconnecting client (every frame of every connection)."""

    @property
    def frames(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class SocketReport:
    received: int
    lost: list[int]
    duplicated: list[int]
    in_order: bool

    @property
    def exact(self) -> bool:
        return not self.lost and not self.duplicated and self.in_order


@dataclass
class SeqLedger:
    """The durable events of one conversation that every watching socket is owed."""

    conversation_id: str
    owed: set[int] = field(default_factory=set)

    def owe(self, seq: int) -> None:
        self.owed.add(int(seq))

    def seqs(self, client: HasFrames) -> list[int]:
        return [
            int(frame["seq"])
            for frame in client.frames
            if "event_id" in frame
            and "seq" in frame
            and str(frame.get("conversation_id")) == self.conversation_id
        ]

    def report(self, client: HasFrames) -> SocketReport:
        seqs = [seq for seq in self.seqs(client) if seq in self.owed]
        counts = Counter(seqs)
        return SocketReport(
            received=len(counts),
            lost=sorted(self.owed - counts.keys()),
            duplicated=sorted(seq for seq, n in counts.items() if n > 1),
            in_order=seqs == sorted(seqs),
        )

    def complete(self, clients: Sequence[HasFrames]) -> bool:
        return all(not self.report(client).lost for client in clients)

    def summary(self, clients: Sequence[HasFrames]) -> str:
        rows = []
        for index, client in enumerate(clients):
            r = self.report(client)
            rows.append(
                f"socket {index}: owed {len(self.owed)} got {r.received} lost {len(r.lost)} "
                f"duplicated {len(r.duplicated)} in_order {r.in_order}"
            )
        return "\n".join(rows)


class SocketPump:
    """Reads every frame of some sockets into their ``frames`` until stopped."""

    def __init__(self, clients: list[WsClient]) -> None:
        self.clients = list(clients)
        self._tasks = [asyncio.create_task(self._pump(c)) for c in self.clients]

    def add(self, client: WsClient) -> None:
        self.clients.append(client)
        self._tasks.append(asyncio.create_task(self._pump(client)))

    @staticmethod
    async def _pump(client: WsClient) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await client.drain(within=0.2)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
