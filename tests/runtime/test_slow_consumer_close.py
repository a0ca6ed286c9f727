"""A client that stops reading, then reads again before the stall time, sees the 4008 close.

The server queues its 4008 close behind everything it had buffered for the socket; a client
that comes back must be able to read all of that and then the close frame, instead of finding
its connection aborted (1006) by autobahn's one-second close-handshake timeout.
realtime_project/runtime/daphne.py; the tripwires on the autobahn timer it replaces are in
test_daphne_internals.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from realtime_project.close_codes import WS_4008_SLOW_CONSUMER
from scripts.deployment import Cluster
from tests.runtime.conftest import RUNTIME_ENV
from tests.runtime.test_daphne_runtime import _open, _stalled_socket, _token
from tests.support.async_poll import async_wait_until
from tests.support.services import service_running
from tests.support.ws_client import frame_is

STALL_SECONDS = 4.0
# The client's pause after the server queued the close: longer than autobahn's close
# handshake timeout (1 s), shorter than the stall time.
PAUSE_SECONDS = 2.0


@pytest.fixture(scope="module")
def patient_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(
        instances=1,
        state_dir=tmp_path_factory.mktemp("patient-cluster"),
        env={**RUNTIME_ENV, "WS_SEND_STALL_SECONDS": str(STALL_SECONDS)},
        with_firestore=False,
        database_url=os.environ.get("DATABASE_URL"),
    )
    with service_running(cluster):
        yield cluster


def _slow_consumer_logged(log_path: Path) -> bool:
    text = log_path.read_text(errors="replace")
    return "ws_slow_consumer" in text or "ws slow consumer" in text


def _close_code_read(sock: socket.socket, *, within: float) -> int | None:
    """Read server frames until a close frame (its code) or the end of the connection (None)."""
    sock.settimeout(0.2)
    buffer = bytearray()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        buffer += chunk
        while len(buffer) >= 2:
            opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    break
                length, start = struct.unpack(">H", buffer[2:4])[0], 4
            elif length == 127:
                if len(buffer) < 10:
                    break
                length, start = struct.unpack(">Q", buffer[2:10])[0], 10
            if len(buffer) < start + length:
                break
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            if opcode == 0x8:
                return int(struct.unpack(">H", payload[:2])[0])
    raise AssertionError(f"neither a close frame nor the end within {within}s")


async def test_a_reader_back_within_the_stall_time_sees_4008(patient_cluster: Cluster) -> None:
    instance = patient_cluster.instances[0]
    conversation = patient_cluster.demo["conversations"]["alice-bob"]["id"]
    stalled = _stalled_socket(instance, _token(patient_cluster, "bob"))
    alice = await _open(instance.ws_url, _token(patient_cluster, "alice"))
    try:
        await alice.recv_until(frame_is("connected"))
        body = "y" * 60000
        started = time.monotonic()
        # Paced by the acks, until the server gives up on bob and queues the 4008 behind what
        # it buffered for him (bounded: the test fails below if that never happens).
        while not _slow_consumer_logged(instance.log_path):
            # Each round waits for its acks: on a loaded 2-core machine filling the server's
            # buffer for bob takes longer than on a quiet one.
            assert time.monotonic() < started + 60, "the server never closed the stalled socket"
            for _ in range(5):
                await alice.send({"type": "message", "conversation_id": conversation, "body": body})
            for _ in range(5):
                await alice.recv_until(frame_is("ack"), within=10)
        # Bob's client is busy elsewhere a little longer (what it does, not a wait for the
        # server), then reads again: everything buffered, and then the close.
        await asyncio.sleep(PAUSE_SECONDS)
        code = await asyncio.to_thread(_close_code_read, stalled, within=30)
        assert code == WS_4008_SLOW_CONSUMER
    finally:
        stalled.close()
        await alice.close()


async def test_a_reader_that_never_comes_back_is_dropped(patient_cluster: Cluster) -> None:
    """The memory bound holds: the stalled socket's connection ends within a bounded time."""
    instance = patient_cluster.instances[0]
    conversation = patient_cluster.demo["conversations"]["alice-bob"]["id"]
    logged_before = instance.log_path.read_text(errors="replace").count("slow consumer")
    stalled = _stalled_socket(instance, _token(patient_cluster, "bob"))
    alice = await _open(instance.ws_url, _token(patient_cluster, "alice"))
    try:
        await alice.recv_until(frame_is("connected"))
        body = "z" * 60000
        started = time.monotonic()

        def closed_again() -> bool:
            text = instance.log_path.read_text(errors="replace")
            return text.count("slow consumer") > logged_before

        while not closed_again():
            # Each round waits for its acks: on a loaded 2-core machine filling the server's
            # buffer for bob takes longer than on a quiet one.
            assert time.monotonic() < started + 60, "the server never closed the stalled socket"
            for _ in range(5):
                await alice.send({"type": "message", "conversation_id": conversation, "body": body})
            for _ in range(5):
                await alice.recv_until(frame_is("ack"), within=10)

        def peer_gone() -> bool:
            # The kernel reports a reset once the server aborted (without reading anything).
            error = stalled.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                return True
            stalled.setblocking(False)
            try:
                return stalled.recv(1, socket.MSG_PEEK) == b""
            except BlockingIOError:
                return False
            except ConnectionResetError:
                return True

        await async_wait_until(
            peer_gone, timeout=STALL_SECONDS + 10, what="the stalled socket dropped"
        )
    finally:
        stalled.close()
        await alice.close()
