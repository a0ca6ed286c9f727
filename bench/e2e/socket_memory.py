"""Where an idle authenticated socket's memory goes, above what Daphne itself holds.

Run: .venv/bin/python -m bench.e2e.socket_memory [--sockets 500]

Opens sockets in-process (Channels' ``WebsocketCommunicator`` on the project's ASGI
application, with a real redis-server for the layer and the registry, SQLite for the
database) and compares ``tracemalloc`` snapshots before and after: the allocations each
socket keeps, grouped by the source line that made them. Daphne's own share (Twisted and
Autobahn's protocol objects) is not here: that is what the bare echo measures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.e2e.inprocess import inprocess_env, inprocess_seed, socket_open
from scripts.procs import RedisServer


def _drain(communicators: list[Any]) -> int:
    """Throw away what the sockets were sent (a client that reads everything)."""
    count = 0
    for communicator in communicators:
        queue = communicator.output_queue
        while not queue.empty():
            queue.get_nowait()
            count += 1
    return count


async def traffic(
    opened: list[Any], conversations: list[str | None], *, seconds: float, top: int
) -> None:
    """``--traffic S``: typing and messages among the open sockets for S seconds, then what
    the process holds that it did not hold before, by source line (soak growth)."""
    gc.collect()
    before = tracemalloc.take_snapshot()
    frames = received = 0
    started = time.monotonic()
    index = 0
    while time.monotonic() - started < seconds:
        for _ in range(20):
            socket, conversation = opened[index % len(opened)], conversations[index % len(opened)]
            index += 1
            if conversation is None:
                continue
            outgoing: dict[str, object] = (
                {"type": "message", "conversation_id": conversation, "body": "soak"}
                if index % 20 == 0
                else {"type": "typing", "conversation_id": conversation, "is_typing": True}
            )
            await socket.send_to(text_data=json.dumps(outgoing))
            frames += 1
        await asyncio.sleep(0.05)
        received += _drain(opened)
    await asyncio.sleep(1.0)
    received += _drain(opened)
    gc.collect()
    after = tracemalloc.take_snapshot()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
    total = sum(s.size_diff for s in stats)
    print(
        f"traffic: {frames} frames in {seconds:.0f} s, {received} frames received; "
        f"the process holds {total / 1024:.0f} KiB more ({total / max(1, received):.0f} B "
        "per frame received)"
    )
    for stat in stats[:top]:
        frame = stat.traceback[0]
        name = "/".join(Path(frame.filename).parts[-3:])
        where = f"{name}:{frame.lineno}"
        print(f"  {stat.size_diff / 1024:8.1f} KiB  {stat.count_diff:+7d} blocks  {where}")


async def measure(
    sockets: int,
    tokens: list[str],
    top: int,
    *,
    conversations: list[str | None] | None = None,
    traffic_seconds: float = 0,
) -> None:
    import django

    django.setup()
    from realtime_project.asgi import application

    async def open_one(token: str) -> Any:
        return await socket_open(application, token)

    # Warm up: the first socket pays for imports, pools and caches.
    warm = [await open_one(t) for t in tokens[:20]]
    tracemalloc.start(12)
    before = tracemalloc.take_snapshot()
    opened = [await open_one(t) for t in tokens[20 : 20 + sockets]]
    after = tracemalloc.take_snapshot()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
    total = sum(s.size_diff for s in stats)
    # Bytes too: a lever worth a few hundred bytes hides in a tenth of a KiB's rounding.
    print(
        f"{len(opened)} sockets: {total / len(opened) / 1024:.1f} KiB each "
        f"({total / len(opened):,.0f} B, Python heap)"
    )
    for stat in stats[:top]:
        frame = stat.traceback[0]
        name = "/".join(Path(frame.filename).parts[-3:])
        print(f"  {stat.size_diff / len(opened):8.0f} B/socket  {name}:{frame.lineno}")
    by_file = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "filename")
    print("by file:")
    for stat in by_file[:top]:
        name = "/".join(Path(stat.traceback[0].filename).parts[-3:])
        print(f"  {stat.size_diff / len(opened):8.0f} B/socket  {name}")
    if traffic_seconds and conversations is not None:
        _drain(warm + opened)
        await traffic(opened, conversations[20 : 20 + sockets], seconds=traffic_seconds, top=top)
    tracemalloc.stop()
    for communicator in warm + opened:
        await communicator.disconnect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sockets", type=int, default=500)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--traffic", type=float, default=0, help="then S seconds of typing and messages"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="socket-memory-") as tmp:
        redis = RedisServer(log_dir=Path(tmp)).start()
        try:
            env = inprocess_env(
                tmp,
                redis.url,
                MAX_SOCKETS_PER_USER="1000",
                # The traffic mode sends far faster than a person types.
                RATE_LIMIT_FRAMES_PER_SECOND="1000",
                RATE_LIMIT_BURST="1000",
            )
            seeded = inprocess_seed(env, users=args.sockets + 20)
            tokens = [u["token"] for u in seeded["users"]]
            conversation_of = {
                uid: conv["id"]
                for conv in seeded["conversations"]
                for uid in conv["participant_ids"]
            }
            conversations = [conversation_of.get(u["id"]) for u in seeded["users"]]
            asyncio.run(
                measure(
                    args.sockets,
                    tokens,
                    args.top,
                    conversations=conversations,
                    traffic_seconds=args.traffic,
                )
            )
        finally:
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
