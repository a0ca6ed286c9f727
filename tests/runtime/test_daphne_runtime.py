"""What the server runtime does under a real Daphne (realtime_project/runtime/).

Oversized frames close with 1009 whatever their size; X-Forwarded-For is believed only from
the trusted proxy (HAProxy, which appends the real address); a client that stops reading is
closed before the server buffers more than ``WS_MAX_BUFFERED_BYTES`` for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import urllib.request
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect

from realtime_project.close_codes import WS_1009_MESSAGE_TOO_BIG
from scripts.deployment import Cluster
from scripts.procs import DaphneInstance, wait_until
from tests.runtime.conftest import CLIENT_ADDRESS
from tests.support.ws_client import WsClient, frame_is, upgrade_request_send

MIB = 1024 * 1024


def _token(cluster: Cluster, name: str) -> str:
    return str(cluster.demo["users"][name]["token"])


def _instance(cluster: Cluster) -> DaphneInstance:
    return cluster.instances[0]


def _connections_info(cluster: Cluster, name: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{_instance(cluster).base_url}/api/connections/info",
        headers={"Authorization": f"Token {_token(cluster, name)}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def _address_of(cluster: Cluster, name: str, connection_id: str) -> str | None:
    for row in _connections_info(cluster, name)["connections"]:
        if row["connection_id"] == connection_id:
            return str(row["metadata"].get("address"))
    return None


async def _open(
    url: str, token: str, *, headers: dict[str, str] | None = None, source: str | None = None
) -> WsClient:
    connection = await connect(
        f"{url}?token={token}",
        additional_headers=headers,
        local_addr=(source, 0) if source else None,
        max_size=None,
        ping_interval=None,
        proxy=None,
        open_timeout=5,
    )
    return WsClient(connection)


# -- oversized frames --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [2 * MIB, 16 * MIB], ids=["2MiB", "16MiB"])
async def test_any_oversized_frame_closes_1009_and_spares_others(
    runtime_cluster: Cluster, size: int
) -> None:
    url = _instance(runtime_cluster).ws_url
    alice = await _open(url, _token(runtime_cluster, "alice"))
    bob = await _open(url, _token(runtime_cluster, "bob"))
    try:
        await alice.recv_until(frame_is("connected"))
        await bob.recv_until(frame_is("connected"))
        # The server may close with 1009 while the client is still writing the frame: the
        # send then fails with that close, which is what the client sees.
        with contextlib.suppress(websockets.ConnectionClosed):
            await alice.send(json.dumps({"type": "ping", "pad": "x" * size}))
        assert await alice.wait_closed(within=10) == WS_1009_MESSAGE_TOO_BIG
        await bob.send({"type": "ping", "ref": "still-here"})
        assert (await bob.recv_until(frame_is("pong")))["ref"] == "still-here"
    finally:
        await bob.close()


# -- proxy headers ------------------------------------------------------------------------------


async def test_a_spoofed_forwarded_for_through_haproxy_does_not_reach_the_registry(
    runtime_cluster: Cluster,
) -> None:
    """HAProxy appends the real address; the instance reads it, not the client's claim."""
    balancer = runtime_cluster.haproxy
    assert balancer is not None
    carol = await _open(
        balancer.ws_url,
        _token(runtime_cluster, "carol"),
        headers={"X-Forwarded-For": "203.0.113.7"},
        source=CLIENT_ADDRESS,
    )
    try:
        connected = await carol.recv_until(frame_is("connected"))
        address = wait_until(
            lambda: _address_of(runtime_cluster, "carol", connected["connection_id"]),
            timeout=5,
            what="carol's connection in the registry",
        )
        assert address == CLIENT_ADDRESS
    finally:
        await carol.close()


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(runtime_cluster: Cluster) -> None:
    carol = await _open(
        _instance(runtime_cluster).ws_url,
        _token(runtime_cluster, "carol"),
        headers={"X-Forwarded-For": "203.0.113.7"},
        source=CLIENT_ADDRESS,
    )
    try:
        connected = await carol.recv_until(frame_is("connected"))
        address = wait_until(
            lambda: _address_of(runtime_cluster, "carol", connected["connection_id"]),
            timeout=5,
            what="carol's connection in the registry",
        )
        assert address == CLIENT_ADDRESS
    finally:
        await carol.close()


# -- a client that stops reading ---------------------------------------------------------------


async def _keep_reading(client: WsClient) -> None:
    # Not ``while True``: Python 3.11's wait_for (under drain) loses a cancel that arrives as a
    # frame does, and the reader would then read forever; the request itself stays counted.
    task = asyncio.current_task()
    while task is None or not task.cancelling():
        await client.drain(within=0.5)


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _stalled_socket(instance: DaphneInstance, token: str) -> socket.socket:
    """A WebSocket handshake by hand on a socket with a tiny receive window, never read after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", instance.port))
    upgrade_request_send(sock, port=instance.port, token=token)
    sock.settimeout(5)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _ended(sock: socket.socket) -> bool:
    """Read what is there (for 0.2 s at most); True once the server has closed (EOF) or reset
    the connection."""
    sock.settimeout(0.2)
    try:
        return not sock.recv(1 << 20)
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


async def test_a_client_that_stops_reading_is_closed_and_memory_stays_bounded(
    runtime_cluster: Cluster,
) -> None:
    instance = _instance(runtime_cluster)
    conversation = runtime_cluster.demo["conversations"]["alice-bob-carol"]["id"]
    stalled = _stalled_socket(instance, _token(runtime_cluster, "bob"))
    alice = await _open(instance.ws_url, _token(runtime_cluster, "alice"))
    carol = await _open(instance.ws_url, _token(runtime_cluster, "carol"))
    readers: list[asyncio.Task[None]] = []
    try:
        await alice.recv_until(frame_is("connected"))
        await carol.recv_until(frame_is("connected"))
        wait_until(
            lambda: _connections_info(runtime_cluster, "bob")["connection_count"] == 1,
            timeout=5,
            what="bob's stalled socket registered",
        )
        rss_before = _rss_bytes(instance.pid)
        # Carol reads everything as it comes, alice her acks: only bob stops reading.
        readers.append(asyncio.create_task(_keep_reading(carol)))
        body = "y" * 60000
        sent = 0
        # Far more than the bound plus every kernel buffer on the way: without the bound all
        # of it would wait in the instance's memory for a reader that never comes.
        # Well within Daphne's ping timeout (30 s), which would end a silent socket anyway.
        total_bytes = 32 * MIB
        started = time.monotonic()
        while sent * len(body) < total_bytes and time.monotonic() < started + 12:
            # Paced by the acks, so what piles up is what the server sends, not what it has
            # yet to read.
            for _ in range(10):
                await alice.send({"type": "message", "conversation_id": conversation, "body": body})
                sent += 1
            for _ in range(10):
                await alice.recv_until(frame_is("ack"), within=10)
            if _connections_info(runtime_cluster, "bob")["connection_count"] == 0:
                break
        wait_until(
            lambda: _connections_info(runtime_cluster, "bob")["connection_count"] == 0,
            timeout=3,
            what="the stalled socket closed by the server",
        )
        wait_until(
            lambda: _ended(stalled),
            timeout=3,
            interval=0,
            what="the stalled socket's TCP connection closed by the server",
        )
        growth = _rss_bytes(instance.pid) - rss_before
        assert growth < 16 * MIB, f"RSS grew by {growth / MIB:.1f} MiB"
        # The others were not affected: carol still gets alice's messages, in real time.
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await alice.send(
            {"type": "message", "conversation_id": conversation, "body": "after", "ref": "last"}
        )
        await carol.recv_until(
            lambda f: f.get("type") == "message" and f["message"]["body"] == "after", within=10
        )
        assert alice.is_open and carol.is_open
    finally:
        for reader in readers:
            reader.cancel()
        stalled.close()
        await alice.close()
        await carol.close()


def _stalled_stream(instance: DaphneInstance, token: str) -> socket.socket:
    """An event stream requested by hand on a socket with a tiny receive window, never read
    after its response head."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", instance.port))
    sock.sendall(
        (
            f"GET /api/events/stream?token={token} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{instance.port}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
    )
    sock.settimeout(5)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "closed before the response head"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


async def test_an_event_stream_that_stops_reading_is_ended_and_memory_stays_bounded(
    runtime_cluster: Cluster,
) -> None:
    instance = _instance(runtime_cluster)
    conversation = runtime_cluster.demo["conversations"]["alice-bob-carol"]["id"]
    stalled = _stalled_stream(instance, _token(runtime_cluster, "bob"))
    alice = await _open(instance.ws_url, _token(runtime_cluster, "alice"))
    try:
        await alice.recv_until(frame_is("connected"))
        wait_until(
            lambda: _connections_info(runtime_cluster, "bob")["connection_count"] == 1,
            timeout=5,
            what="bob's stalled stream registered",
        )
        rss_before = _rss_bytes(instance.pid)
        body = "y" * 60000
        sent = 0
        started = time.monotonic()
        while sent * len(body) < 16 * MIB and time.monotonic() < started + 12:
            for _ in range(10):
                await alice.send({"type": "message", "conversation_id": conversation, "body": body})
                sent += 1
            for _ in range(10):
                await alice.recv_until(frame_is("ack"), within=10)
            if _connections_info(runtime_cluster, "bob")["connection_count"] == 0:
                break
        wait_until(
            lambda: _connections_info(runtime_cluster, "bob")["connection_count"] == 0,
            timeout=3,
            what="the stalled stream ended by the server",
        )
        wait_until(
            lambda: _ended(stalled),
            timeout=3,
            what="the stalled stream's TCP connection closed by the server",
        )
        growth = _rss_bytes(instance.pid) - rss_before
        assert growth < 16 * MIB, f"RSS grew by {growth / MIB:.1f} MiB"
        assert alice.is_open
    finally:
        stalled.close()
        await alice.close()
