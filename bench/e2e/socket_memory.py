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
import json
import os
import secrets
import sys
import tempfile
import tracemalloc
from pathlib import Path

from scripts.procs import RedisServer, manage


async def measure(sockets: int, tokens: list[str], top: int) -> None:
    import django

    django.setup()
    from channels.testing import WebsocketCommunicator

    from realtime_project.asgi import application

    async def open_one(token: str) -> WebsocketCommunicator:
        communicator = WebsocketCommunicator(application, f"/ws/?token={token}")
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        frame = json.loads(await communicator.receive_from(timeout=10))
        assert frame["type"] == "connected", frame
        return communicator

    # Warm up: the first socket pays for imports, pools and caches.
    warm = [await open_one(t) for t in tokens[:20]]
    tracemalloc.start(12)
    before = tracemalloc.take_snapshot()
    opened = [await open_one(t) for t in tokens[20 : 20 + sockets]]
    after = tracemalloc.take_snapshot()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
    total = sum(s.size_diff for s in stats)
    print(f"{len(opened)} sockets: {total / len(opened) / 1024:.1f} KiB each (Python heap)")
    for stat in stats[:top]:
        frame = stat.traceback[0]
        name = "/".join(Path(frame.filename).parts[-3:])
        print(f"  {stat.size_diff / len(opened):8.0f} B/socket  {name}:{frame.lineno}")
    by_file = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "filename")
    print("by file:")
    for stat in by_file[:top]:
        name = "/".join(Path(stat.traceback[0].filename).parts[-3:])
        print(f"  {stat.size_diff / len(opened):8.0f} B/socket  {name}")
    tracemalloc.stop()
    for communicator in warm + opened:
        await communicator.disconnect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sockets", type=int, default=500)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="socket-memory-") as tmp:
        redis = RedisServer(log_dir=Path(tmp)).start()
        try:
            env = {
                "DJANGO_SETTINGS_MODULE": "realtime_project.settings",
                "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3",
                "REDIS_URL": redis.url,
                "SECRET_KEY": secrets.token_urlsafe(50),
                "LOG_LEVEL": "WARNING",
                "MAX_SOCKETS_PER_USER": "1000",
            }
            env.pop("FIRESTORE_PROJECT_ID", None)
            manage("migrate", "--noinput", env=env)
            seeded = json.loads(
                manage("bench_seed", "--users", str(args.sockets + 20), "--json", env=env)
            )
            os.environ.update(env)
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
            tokens = [u["token"] for u in seeded["users"]]
            asyncio.run(measure(args.sockets, tokens, args.top))
        finally:
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
