"""Connects past the admission limit against a live Daphne (accounts/admission.py).

While the gate is full, an upgrade is answered ``503`` with its retry hint before any
handshake; connects that arrive together, all passing that check before any of them took the
gate's ticket, are accepted and closed with ``1013`` and the hint as the close frame's
reason. Daphne does neither by itself: both are realtime_project/runtime/daphne.py's.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from accounts.admission import RETRY_MIN_MS, RETRY_REASON_PREFIX
from realtime_project.close_codes import WS_1013_TRY_AGAIN_LATER, WS_4401_UNAUTHORIZED
from scripts.deployment import Cluster
from scripts.procs import DaphneInstance, wait_until
from tests.support.services import service_running
from tests.support.ws_client import upgrade_request_send

# One connect at a time: the second one in flight is shed.
ADMISSION_ENV = {"CONNECT_MAX_IN_FLIGHT": "1", "LOG_LEVEL": "WARNING"}


@pytest.fixture(scope="module")
def gated_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(
        instances=1,
        state_dir=tmp_path_factory.mktemp("gated-cluster"),
        env=ADMISSION_ENV,
        with_firestore=False,
        database_url=os.environ.get("DATABASE_URL"),
    )
    with service_running(cluster):
        yield cluster


def _token(cluster: Cluster, name: str) -> str:
    return str(cluster.demo["users"][name]["token"])


def _upgrade_sent(instance: DaphneInstance, token: str) -> socket.socket:
    """A WebSocket upgrade request written to the instance; its answer is not read yet."""
    sock = socket.create_connection(("127.0.0.1", instance.port), timeout=5)
    upgrade_request_send(sock, port=instance.port, token=token)
    return sock


def _accept_queue(port: int) -> int:
    """Connections to ``port`` (on 127.0.0.1) the kernel holds that the server has not
    accepted yet: the receive queue of its listening socket."""
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if state == "0A" and int(local.rpartition(":")[2], 16) == port:
                return int(queues.partition(":")[2], 16)
    raise AssertionError(f"nothing listens on {port}")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    # After a 101: the close frame's code and reason, or the type of the first text frame.
    close_code: int | None = None
    close_reason: str = ""
    first_frame: str | None = None


def _read_more(sock: socket.socket, buffer: bytearray) -> None:
    chunk = sock.recv(65536)
    assert chunk, f"the server closed the connection with {bytes(buffer)!r} unread"
    buffer += chunk


def _frame(buffer: bytearray) -> tuple[int, bytes] | None:
    """The first whole (unmasked) server frame in ``buffer``, taken out of it; None if the
    buffer does not hold one yet."""
    if len(buffer) < 2:
        return None
    opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length, start = struct.unpack(">H", buffer[2:4])[0], 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length, start = struct.unpack(">Q", buffer[2:10])[0], 10
    if len(buffer) < start + length:
        return None
    payload = bytes(buffer[start : start + length])
    del buffer[: start + length]
    return opcode, payload


def _answer(sock: socket.socket) -> Answer:
    """The server's answer to an upgrade: its head, then (after a 101) the first close frame
    or text frame."""
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        _read_more(sock, buffer)
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    answer = Answer(status=int(status_line.split()[1]), headers=headers)
    if answer.status != 101:
        return answer
    buffer = bytearray(rest)
    while True:
        frame = _frame(buffer)
        if frame is None:
            _read_more(sock, buffer)
            continue
        opcode, payload = frame
        if opcode == 0x8:
            answer.close_code = struct.unpack(">H", payload[:2])[0]
            answer.close_reason = payload[2:].decode("utf-8")
            return answer
        if opcode == 0x1:
            answer.first_frame = json.loads(payload)["type"]
            return answer


def _hint_ms(reason: str) -> int:
    assert reason.startswith(RETRY_REASON_PREFIX), reason
    return int(reason.removeprefix(RETRY_REASON_PREFIX))


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        # The state follows the command name, which is in parentheses.
        return stat.read().rpartition(")")[2].split()[0] == "T"


async def test_connects_past_the_limit_are_closed_1013_with_their_hint(
    gated_cluster: Cluster,
) -> None:
    instance = gated_cluster.instances[0]
    tokens = [_token(gated_cluster, name) for name in ("alice", "bob", "carol")] * 2
    sockets = [socket.create_connection(("127.0.0.1", instance.port), timeout=5) for _ in tokens]
    # Connections the server has accepted, then upgrades written to them while it is stopped:
    # it reads all six in one turn of its loop, each passes the check before the handshake
    # (no connect in flight yet), and the gate then admits one and sheds the others, which
    # have been accepted by then.
    wait_until(lambda: _accept_queue(instance.port) == 0, timeout=5, what="accepted")
    os.kill(instance.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: _stopped(instance.pid), timeout=5, interval=0, what="stopped")
        for sock, token in zip(sockets, tokens, strict=True):
            upgrade_request_send(sock, port=instance.port, token=token)
    finally:
        os.kill(instance.pid, signal.SIGCONT)
    try:
        answers = await asyncio.to_thread(lambda: [_answer(sock) for sock in sockets])
    finally:
        for sock in sockets:
            sock.close()
    assert all(answer.status == 101 for answer in answers), [
        (a.status, a.close_code, a.first_frame) for a in answers
    ]
    shed = [answer for answer in answers if answer.close_code == WS_1013_TRY_AGAIN_LATER]
    admitted = [answer for answer in answers if answer.first_frame == "connected"]
    assert shed and admitted and len(shed) + len(admitted) == len(answers), answers
    for answer in shed:
        assert _hint_ms(answer.close_reason) >= RETRY_MIN_MS


async def test_an_upgrade_past_the_limit_is_refused_503_with_its_hint(
    gated_cluster: Cluster,
) -> None:
    url = gated_cluster.database.url
    if not url.startswith(("postgres://", "postgresql://")):
        pytest.skip("needs PostgreSQL (DATABASE_URL=postgres://...) to hold a connect")
    import psycopg

    instance = gated_cluster.instances[0]

    def waiting_on_tokens(watch: psycopg.Connection[tuple[int]]) -> bool:
        row = watch.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE c.relname = 'connections_authtoken' AND NOT l.granted"
        ).fetchone()
        return row is not None and row[0] > 0

    held = refused = None
    with (
        psycopg.connect(url) as lock,
        psycopg.connect(url, autocommit=True) as watch,
    ):
        try:
            # A connect holds the gate's only ticket while its token lookup waits on this lock.
            lock.execute("LOCK TABLE connections_authtoken IN ACCESS EXCLUSIVE MODE")
            held = _upgrade_sent(instance, "not-a-token")
            wait_until(
                lambda: waiting_on_tokens(watch), timeout=10, what="a connect holding the gate"
            )
            refused = _upgrade_sent(instance, _token(gated_cluster, "alice"))
            answer = await asyncio.to_thread(_answer, refused)
            lock.rollback()
            # Its token unknown, the held connect is refused, which gives its ticket back.
            assert (await asyncio.to_thread(_answer, held)).close_code == WS_4401_UNAUTHORIZED
        finally:
            lock.rollback()
            for sock in (held, refused):
                if sock is not None:
                    sock.close()
    assert answer.status == 503, answer
    hint_ms = int(answer.headers["x-retry-after-ms"])
    assert hint_ms >= RETRY_MIN_MS
    assert int(answer.headers["retry-after"]) == math.ceil(hint_ms / 1000)
    # The gate free again, the same client gets in.
    again = _upgrade_sent(instance, _token(gated_cluster, "alice"))
    try:
        answer = await asyncio.to_thread(_answer, again)
    finally:
        again.close()
    assert (answer.status, answer.first_frame) == (101, "connected"), answer
