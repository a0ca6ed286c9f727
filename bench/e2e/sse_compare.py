"""An idle event stream against an idle WebSocket: memory each, and durable delivery rate.

Run: .venv/bin/python -m bench.e2e.sse_compare [--sockets 300] [--events 40] [--rounds 3]
     .venv/bin/python -m bench.e2e.sse_compare --daphne [--sockets 300]

In one process (the project's ASGI application, a real redis-server for the layer and the
registry, SQLite), first N WebSockets then N event streams of N users, each user in a
conversation of 10: ``tracemalloc`` says what each connection keeps on the Python heap
(Daphne's own share, the same TCP connection either way, is not in it), then ``--events``
durable events per conversation are sent through the layer as live ones are, and the time
until every connection has all of them is the delivery rate. Both transports run the same
delivery code (``chat.live_socket``); what differs is the framing, and the stream's
``id:`` cursor computed for every durable event. ``--daphne`` measures instead what the
Python heap leaves out: the RSS growth of two real Daphne instances (Redis, SQLite), one
holding the WebSockets and the other the streams.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.e2e.inprocess import inprocess_env, inprocess_seed, socket_open
from scripts.procs import RedisServer, manage

CONVERSATION_SIZE = 10


async def stream_open(application: Any, token: str) -> Any:
    """An event stream on ``application`` (an ``ApplicationCommunicator``), past ``connected``."""
    from channels.testing import ApplicationCommunicator

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": "/api/events/stream",
        "raw_path": b"/api/events/stream",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "headers": [(b"host", b"bench"), (b"authorization", f"Token {token}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("bench", 80),
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(timeout=10)
    assert start["status"] == 200, start
    while b"event: connected" not in (await communicator.receive_output(timeout=10))["body"]:
        pass
    return communicator


def _events_in(message: dict[str, Any]) -> int:
    if message.get("type") == "websocket.send":
        return 1
    return int(bytes(message.get("body", b"")).count(b"\ndata: "))


async def _memory(opener: Callable[[str], Awaitable[Any]], tokens: list[str]) -> tuple[list, float]:
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    opened = [await opener(t) for t in tokens]
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "filename")
    return opened, sum(s.size_diff for s in stats) / len(opened)


async def _delivery(opened: list[Any], conversations: list[str], events: int) -> float:
    """Events per second into ``opened``: ``events`` per conversation, as live ones come."""
    from channels.layers import get_channel_layer

    from chat.event_types import now_iso
    from chat.events import conversation_group
    from chat.layer_messages import realtime_event_message

    layer = get_channel_layer()
    assert layer is not None
    for communicator in opened:  # what connect sent
        while not communicator.output_queue.empty():
            communicator.output_queue.get_nowait()
    expected = len(opened) * events
    started = time.perf_counter()
    for seq in range(1, events + 1):
        for conversation_id in conversations:
            frame = {
                "type": "message",
                "event_id": uuid.uuid4().hex,
                "ts": now_iso(),
                "conversation_id": conversation_id,
                "seq": seq,
                "message": {"id": uuid.uuid4().hex, "body": "bench"},
            }
            message = realtime_event_message(frame)
            await layer.group_send(conversation_group(conversation_id), message)
        await asyncio.sleep(0)
    received = 0
    deadline = time.monotonic() + 120
    while received < expected and time.monotonic() < deadline:
        progressed = False
        for communicator in opened:
            queue = communicator.output_queue
            while not queue.empty():
                received += _events_in(queue.get_nowait())
                progressed = True
        if not progressed:
            await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    assert received == expected, (received, expected)
    return expected / elapsed


async def _close(opened: list[Any], websocket: bool) -> None:
    for communicator in opened:
        if websocket:
            await communicator.disconnect()
        else:
            await communicator.send_input({"type": "http.disconnect"})
            await communicator.wait(timeout=5)


async def measure(tokens: list[str], conversations: list[str], events: int, rounds: int) -> None:
    import django

    django.setup()
    from realtime_project.asgi import application

    # Warm up both paths: imports, pools, caches.
    warm_ws = [await socket_open(application, t) for t in tokens[:5]]
    warm_sse = [await stream_open(application, t) for t in tokens[5:10]]
    await _close(warm_ws, True)
    await _close(warm_sse, False)

    users = tokens[10:]
    ws_bytes: list[float] = []
    sse_bytes: list[float] = []
    ws_rates: list[float] = []
    sse_rates: list[float] = []
    # Alternating rounds, the median of each: the machine is shared, and neither transport
    # should inherit a warmer (or more fragmented) process than the other.
    for _ in range(rounds):
        sockets, per_socket = await _memory(lambda t: socket_open(application, t), users)
        ws_bytes.append(per_socket)
        ws_rates.append(await _delivery(sockets, conversations, events))
        await _close(sockets, True)
        streams, per_stream = await _memory(lambda t: stream_open(application, t), users)
        sse_bytes.append(per_stream)
        sse_rates.append(await _delivery(streams, conversations, events))
        await _close(streams, False)
    ws_memory, sse_memory = statistics.median(ws_bytes), statistics.median(sse_bytes)
    ws_rate, sse_rate = statistics.median(ws_rates), statistics.median(sse_rates)
    print(
        f"rounds: WebSocket {[round(r) for r in ws_rates]}, stream {[round(r) for r in sse_rates]}"
    )
    n = len(users)
    print(f"{n} idle connections each, {len(conversations)} conversations, {events} events each")
    print(f"memory per idle WebSocket: {ws_memory / 1024:.1f} KiB (Python heap)")
    print(f"memory per idle stream:    {sse_memory / 1024:.1f} KiB (Python heap)")
    print(f"  stream / WebSocket: {sse_memory / ws_memory:.2f}x (target <= 1.5x)")
    print(f"delivery to WebSockets: {ws_rate:,.0f} events/s")
    print(f"delivery to streams:    {sse_rate:,.0f} events/s")
    print(f"  streams / WebSockets: {sse_rate / ws_rate:.2f}x (target >= 0.8x)")


async def daphne_memory(cluster: Any, tokens: list[str], count: int) -> None:
    """RSS growth of two real Daphne instances: ``count`` idle WebSockets on one, ``count``
    idle streams on the other (each instance warmed with both kinds first)."""
    import websockets

    from bench.e2e.measure import rss_settled
    from tests.support.sse import TcpStream

    a, b = cluster.instances
    pids = {"ws": a.pid, "sse": b.pid}

    async def websocket(url: str, token: str) -> Any:
        client = await websockets.connect(f"{url}?token={token}", open_timeout=30)
        await client.recv()  # connected
        return client

    async def stream(url: str, token: str) -> TcpStream:
        opened = await TcpStream.open(url, token=token, within=30)
        await opened.frame_until("connected", within=30)
        return opened

    warm = [await websocket(i.ws_url, t) for i in (a, b) for t in tokens[:5]]
    warm_streams = [await stream(i.base_url, t) for i in (a, b) for t in tokens[5:10]]
    for client in warm:
        await client.close()
    for opened in warm_streams:
        await opened.close()
    await asyncio.sleep(2)
    before = await rss_settled(pids)
    users = tokens[10 : 10 + count]
    sockets = [await websocket(a.ws_url, t) for t in users]
    streams = [await stream(b.base_url, t) for t in users]
    after = await rss_settled(pids)
    ws_kib = (after["ws"] - before["ws"]) / len(users)
    sse_kib = (after["sse"] - before["sse"]) / len(users)
    print(f"Daphne RSS, {len(users)} idle connections on each of two instances:")
    print(f"  per WebSocket: {ws_kib:.1f} KiB, per stream: {sse_kib:.1f} KiB")
    print(f"  stream / WebSocket: {sse_kib / ws_kib:.2f}x (target <= 1.5x)")
    for client in sockets:
        await client.close()
    for opened in streams:
        await opened.close()


def main_daphne(count: int) -> int:
    from scripts.deployment import Cluster

    with tempfile.TemporaryDirectory(prefix="sse-daphne-") as tmp:
        cluster = Cluster(
            instances=2,
            state_dir=Path(tmp),
            env={"MAX_SOCKETS_PER_USER": "1000", "LOG_LEVEL": "WARNING"},
            with_firestore=False,
        )
        cluster.start()
        try:
            seeded = json.loads(
                manage(
                    "bench_seed",
                    "--users",
                    str(count + 10),
                    "--size",
                    str(CONVERSATION_SIZE),
                    "--prefix",
                    "sse",
                    "--json",
                    env=cluster.instance_env(),
                )
            )
            tokens = [u["token"] for u in seeded["users"]]
            asyncio.run(daphne_memory(cluster, tokens, count))
        finally:
            cluster.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sockets", type=int, default=300)
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--daphne", action="store_true", help="instead: RSS of idle connections on real Daphne"
    )
    args = parser.parse_args(argv)
    if args.daphne:
        return main_daphne(args.sockets)
    sockets = max(CONVERSATION_SIZE, args.sockets - args.sockets % CONVERSATION_SIZE)
    with tempfile.TemporaryDirectory(prefix="sse-compare-") as tmp:
        redis = RedisServer(log_dir=Path(tmp)).start()
        try:
            env = inprocess_env(tmp, redis.url, MAX_SOCKETS_PER_USER="1000")
            # The first 10 users only warm up; the rest fill whole conversations.
            inprocess_seed(env, users=1)  # migrate, and this process's environment
            seeded = json.loads(
                manage(
                    "bench_seed",
                    "--users",
                    str(sockets + 10),
                    "--size",
                    str(CONVERSATION_SIZE),
                    "--prefix",
                    "sse",
                    "--json",
                    env=env,
                )
            )
            users = seeded["users"]
            tokens = [u["token"] for u in users[:10]] + [u["token"] for u in users[10:]]
            measured = {u["id"] for u in users[10:]}
            conversations = [
                c["id"] for c in seeded["conversations"] if set(c["participant_ids"]) <= measured
            ]
            asyncio.run(measure(tokens, conversations, args.events, args.rounds))
        finally:
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
