"""Redis round trips of one lone connect and disconnect, in-process (no Daphne, no load).

Run: .venv/bin/python -m bench.e2e.round_trips [--trials 9] [--linger SECONDS]

The same count as the end-to-end run's (``bench.e2e.measure.round_trips``): read events on
Redis client sockets (``total_reads_processed``), the probe's own INFO and the layer's idle
PINGs taken out, the most common value over the trials. One user connects and disconnects
alone, again and again, through Channels' ``WebsocketCommunicator`` on the project's ASGI
application, with a real redis-server and SQLite; the user's first connect (another user
connected before it, so the process's Redis links are up; nothing of this user's is subscribed
or cached yet) is reported apart. ``--linger`` sets ``LAYER_GROUP_LINGER_SECONDS`` (0: a group
is unsubscribed as its last member leaves); a trial waits ``--pause`` seconds after each
disconnect, like a client's reconnect backoff.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.e2e.inprocess import inprocess_env, inprocess_seed, socket_open
from bench.e2e.measure import redis_quiet, round_trips_summary
from bench.e2e.probes import RedisCounters, RedisProbe
from scripts.procs import RedisServer


async def measure(
    token: str, warm_token: str, probe: RedisProbe, *, trials: int, pause: float
) -> dict[str, Any]:
    import django

    django.setup()
    from realtime_project.asgi import application

    async def connect(token: str) -> Any:
        return await socket_open(application, token)

    # Another user (of another conversation) pays for the process's first Redis connections.
    await (await connect(warm_token)).disconnect()
    connects: list[RedisCounters] = []
    disconnects: list[RedisCounters] = []
    for _ in range(trials + 1):
        await redis_quiet(probe, since=probe.counters())
        start = probe.counters()
        communicator = await connect(token)
        connects.append(await redis_quiet(probe, since=start))
        start = probe.counters()
        await communicator.disconnect()
        disconnects.append(await redis_quiet(probe, since=start))
        await asyncio.sleep(pause)
    return {
        "first_connect": round_trips_summary(connects[:1]),
        "connect": round_trips_summary(connects[1:]),
        "disconnect": round_trips_summary(disconnects),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--linger", type=float, default=None, help="LAYER_GROUP_LINGER_SECONDS")
    parser.add_argument("--pause", type=float, default=0.5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="round-trips-") as tmp:
        redis = RedisServer(log_dir=Path(tmp)).start()
        probe = RedisProbe(redis.url)
        try:
            env = inprocess_env(
                tmp,
                redis.url,
                # As in the end-to-end run: background ticks stay out of a lone connect.
                PRESENCE_DEADLINE_POLL_SECONDS="30",
            )
            if args.linger is not None:
                env["LAYER_GROUP_LINGER_SECONDS"] = str(args.linger)
            seeded = inprocess_seed(env, users=4)
            users = seeded["users"]
            together = {
                uid
                for conv in seeded["conversations"]
                if users[0]["id"] in conv["participant_ids"]
                for uid in conv["participant_ids"]
            }
            warm = next(u for u in users[1:] if u["id"] not in together)
            result = asyncio.run(
                measure(
                    users[0]["token"], warm["token"], probe, trials=args.trials, pause=args.pause
                )
            )
        finally:
            probe.close()
            redis.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
