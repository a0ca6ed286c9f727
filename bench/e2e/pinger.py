"""Pings from a process of its own: how long an instance takes to answer, not the bench's loop.

Run by the storm (bench/e2e/storm.py): ``python -m bench.e2e.pinger URL TOKENS_FILE RATE OUT``.
It opens one socket per token at ``URL``, prints ``ready`` once every socket has its
``connected`` frame, pings round-robin at ``RATE`` a second until it reads end of input, then
writes ``[[sent, round trip ms], ...]`` (``time.monotonic()``: one clock for every process on
the machine) to ``OUT``. The storm's own process also pings, but it is the process that
reconnects thousands of clients at once: its loop's lag is in its round trips.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import websockets


async def _open(url: str, token: str) -> Any:
    ws = await websockets.connect(f"{url}?token={token}", open_timeout=30, max_queue=None)
    while True:
        frame = json.loads(await ws.recv())
        if frame.get("type") == "connected":
            return ws


async def _pinger(url: str, tokens: list[str], rate: float) -> list[tuple[float, float]]:
    sockets = [await _open(url, token) for token in tokens]
    waiting: dict[str, float] = {}
    samples: list[tuple[float, float]] = []

    async def read(ws: Any) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            sent_at = waiting.pop(str(frame.get("ref")), None)
            if sent_at is not None:
                samples.append((sent_at, (time.monotonic() - sent_at) * 1000))

    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    refs = itertools.count()
    started = time.monotonic()
    sent = 0
    while not stdin_closed.done():
        due = int((time.monotonic() - started) * rate)
        while sent < due:
            ref = f"p{next(refs)}"
            waiting[ref] = time.monotonic()
            await sockets[sent % len(sockets)].send(json.dumps({"type": "ping", "ref": ref}))
            sent += 1
        await asyncio.sleep(0.005)
    for task in readers:
        task.cancel()
    for ws in sockets:
        await ws.close()
    return samples


def main() -> None:
    url, tokens_file, rate, out = sys.argv[1:5]
    tokens = Path(tokens_file).read_text().split()
    Path(out).write_text(json.dumps(asyncio.run(_pinger(url, tokens, float(rate)))))


if __name__ == "__main__":
    main()
