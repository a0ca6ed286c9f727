"""The registry's per-socket scripts, many sockets' worth in one pipelined round trip.

See docs/registry.md ("Writes of many sockets at once"). A connect or a disconnect is one
Lua script; run one by one, a thousand sockets connecting or closing in the same second each
took a pooled connection of their own and waited for it, until the pool ran out
(``MaxConnectionsError``) and the registry fell back to keeping local truth. Here every
script queued on an event loop while the previous batch was on the wire goes out in the
next one: one connection, one round trip per batch, whatever the number of sockets. Each
script stays atomic on its own, and they run in the order they were queued, so a socket's
connect always reaches Redis before its disconnect.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from typing import Any, Final

from connections.topology import LoopClients

# Scripts per pipeline: a bound on how long one batch holds Redis (a few milliseconds).
BATCH_MAX_SCRIPTS: Final = 500


@dataclass
class _Call:
    script: str
    keys: list[str]
    args: list[Any]
    result: asyncio.Future[Any]


@dataclass
class _LoopQueue:
    pending: list[_Call] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None


class ScriptBatcher:
    """Runs Lua scripts on the loop's client, batched per round trip (one flusher per loop)."""

    def __init__(self, clients: LoopClients) -> None:
        self._clients = clients
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue] = (
            weakref.WeakKeyDictionary()
        )
        self.batches = 0
        self.scripts = 0

    async def run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """The script's reply; a Redis failure raises here as it would from ``eval``."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _LoopQueue()
        call = _Call(script, keys, args, loop.create_future())
        queue.pending.append(call)
        if queue.flusher is None:
            # Starts on the loop's next turn: every caller of this turn is in its first batch.
            queue.flusher = loop.create_task(self._flush(queue))
        return await call.result

    async def _flush(self, queue: _LoopQueue) -> None:
        try:
            while queue.pending:
                batch = queue.pending[:BATCH_MAX_SCRIPTS]
                del queue.pending[:BATCH_MAX_SCRIPTS]
                await self._send(batch)
        finally:
            queue.flusher = None

    async def _send(self, batch: list[_Call]) -> None:
        try:
            pipe = self._clients.get().pipeline(transaction=False)
            for call in batch:
                pipe.eval(call.script, len(call.keys), *call.keys, *call.args)
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for call in batch:
                call.result.cancel()
            raise
        except Exception as exc:
            for call in batch:
                if not call.result.done():
                    call.result.set_exception(exc)
            return
        self.batches += 1
        self.scripts += len(batch)
        for call, reply in zip(batch, replies, strict=True):
            if call.result.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                call.result.set_exception(reply)
            else:
                call.result.set_result(reply)
