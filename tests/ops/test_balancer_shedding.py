"""HAProxy sheds a connect storm itself, before the instances (deploy/haproxy.cfg).

Past ``CONNECT_RATE_PER_INSTANCE`` connects a second per instance up, a WebSocket upgrade or
an event stream is answered ``503`` by the balancer with the instance's own retry hint
(``X-Retry-After-Ms``, ``Retry-After``), at once, however many arrive together; REST and
health pass whatever the rate; only admitted connects count toward it, so a storm's refused
retries never lock clients out; and the Python client, honouring the hint, gets every socket
in at the pace allowed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from realtime_client import Backoff, Client, Observer

from accounts.admission import RETRY_MIN_MS
from scripts.deployment import Cluster
from tests.support.async_poll import async_wait_until
from tests.support.services import service_running

pytestmark = pytest.mark.cluster

LIMIT = 5
CONNECTS = 40
NAMES = ("alice", "bob", "carol")


@pytest.fixture
def balanced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One instance behind HAProxy limited to ``LIMIT`` connects a second; a fresh one per
    test, so each starts with no connect counted."""
    cluster = Cluster(
        instances=1,
        state_dir=tmp_path_factory.mktemp("balanced"),
        # The instance takes every connect the balancer lets through: what is refused here
        # is the balancer's doing.
        env={"MAX_SOCKETS_PER_USER": "100", "LOG_LEVEL": "WARNING", "DRAIN_DELAY_SECONDS": "0"},
        with_firestore=False,
        database_url=os.environ.get("DATABASE_URL"),
        balancer_env={"CONNECT_RATE_PER_INSTANCE": str(LIMIT)},
    )
    with service_running(cluster):
        yield cluster


def _token(cluster: Cluster, name: str) -> str:
    return str(cluster.demo["users"][name]["token"])


def _upgrade(cluster: Cluster, token: str) -> bytes:
    return (
        f"GET /ws/?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{cluster.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def _get(cluster: Cluster, path: str, token: str | None = None) -> bytes:
    auth = f"Authorization: Token {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{cluster.port}\r\n{auth}\r\n".encode()


@dataclass
class Answer:
    kind: str  # "upgrade", "stream", "rest" or "health"
    status: int
    headers: dict[str, str]
    seconds: float  # from the request written to its answer's head read


class Conn:
    """A connection to the balancer whose request is written later, with the others."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, cluster: Cluster) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", cluster.port))

    def send(self, request: bytes) -> float:
        self.writer.write(request)
        return time.monotonic()

    async def answer(self, kind: str, sent: float) -> Answer:
        async with asyncio.timeout(30):
            head = await self.reader.readuntil(b"\r\n\r\n")
        seconds = time.monotonic() - sent
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        return Answer(kind, int(status_line.split()[1]), headers, seconds)

    def close(self) -> None:
        self.writer.close()


async def _burst(cluster: Cluster, requests: list[tuple[str, bytes]]) -> list[Answer]:
    """Every request written at once, each on its own connection; their answers."""
    conns = [await Conn.open(cluster) for _ in requests]
    try:
        sent = [conn.send(request) for conn, (_, request) in zip(conns, requests, strict=True)]
        return await asyncio.gather(
            *(
                conn.answer(kind, at)
                for conn, (kind, _), at in zip(conns, requests, sent, strict=True)
            )
        )
    finally:
        for conn in conns:
            conn.close()


def _assert_refusal(answer: Answer) -> None:
    """The instance's own shape of a refusal before the handshake (docs/protocol.md)."""
    assert answer.status == 503, answer
    hint_ms = int(answer.headers["x-retry-after-ms"])
    assert hint_ms >= RETRY_MIN_MS, answer
    assert int(answer.headers["retry-after"]) == -(-hint_ms // 1000), answer
    assert answer.headers["cache-control"] == "no-store", answer


async def test_a_connect_storm_is_answered_at_once_and_rest_passes(balanced: Cluster) -> None:
    tokens = [_token(balanced, NAMES[i % len(NAMES)]) for i in range(CONNECTS)]
    # Every fourth connect is an event stream, a socket too (docs/sse.md); REST and health
    # come right behind the connects, while the balancer refuses them.
    requests: list[tuple[str, bytes]] = [
        ("stream", _get(balanced, "/api/events/stream", token))
        if i % 4 == 3
        else ("upgrade", _upgrade(balanced, token))
        for i, token in enumerate(tokens)
    ]
    for _ in range(5):
        requests.append(("health", _get(balanced, "/api/health")))
        requests.append(("rest", _get(balanced, "/api/conversations", tokens[0])))

    answers = await _burst(balanced, requests)

    connects = [a for a in answers if a.kind in {"upgrade", "stream"}]
    assert max(a.seconds for a in connects) < 1.0, sorted(a.seconds for a in connects)
    admitted = [a for a in connects if a.status in {101, 200}]
    refused = [a for a in connects if a.status not in {101, 200}]
    # About the limit: HAProxy's rate is a sliding estimate and its threads race on it.
    assert 1 <= len(admitted) <= 2 * LIMIT, [(a.kind, a.status) for a in connects]
    for answer in refused:
        _assert_refusal(answer)
    assert any(a.kind == "stream" for a in refused)
    others = [a for a in answers if a.kind in {"rest", "health"}]
    assert [a.status for a in others] == [200] * len(others), others


async def test_refused_connects_do_not_count_against_the_limit(balanced: Cluster) -> None:
    token = _token(balanced, "alice")
    answers = await _burst(balanced, [("upgrade", _upgrade(balanced, token))] * CONNECTS)
    assert any(a.status == 503 for a in answers)

    async def admitted() -> bool:
        # Far more attempts a second than the limit, every one refused until the admitted
        # ones have aged out of the rate: were refusals counted, none ever would be.
        (answer,) = await _burst(balanced, [("upgrade", _upgrade(balanced, token))])
        return answer.status == 101

    await async_wait_until(admitted, timeout=5, interval=0.02, what="an upgrade admitted")


@dataclass
class Refusal:
    status: int
    delay: float


class Watch(Observer):
    def __init__(self) -> None:
        self.refusals: list[Refusal] = []

    def refused(self, url: str, status: int, delay: float) -> None:
        self.refusals.append(Refusal(status, delay))


async def test_clients_honouring_the_hint_all_get_in(balanced: Cluster) -> None:
    watches = [Watch() for _ in range(CONNECTS)]
    clients = [
        Client(
            balanced.ws_url,
            token=_token(balanced, NAMES[i % len(NAMES)]),
            observer=watch,
            # A refusal without a hint would be retried within 0.5 s (full jitter from 0).
            backoff=Backoff(base_seconds=0.5, cap_seconds=30.0),
            use_proxy=False,
        )
        for i, watch in enumerate(watches)
    ]
    try:
        for client in clients:
            await client.start()
        # CONNECTS at LIMIT a second is 8 s at best; the hints spread them over more.
        await asyncio.gather(*(client.wait_resumed(within=60) for client in clients))
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    refusals = [r for watch in watches for r in watch.refusals]
    assert len(refusals) >= CONNECTS - 2 * LIMIT
    assert {r.status for r in refusals} == {503}
    # Each waited at least the hint's floor: the client read the balancer's hint.
    assert min(r.delay for r in refusals) >= RETRY_MIN_MS / 1000


async def test_with_no_instance_up_the_balancer_says_so_without_a_hint(balanced: Cluster) -> None:
    (instance,) = balanced.instances
    instance.stop(timeout=5)
    balanced.wait_balancer(down=[instance.instance_id], timeout=10)
    token = _token(balanced, "alice")
    (answer,) = await _burst(balanced, [("upgrade", _upgrade(balanced, token))])
    # HAProxy's own "no server available": a hint would bring clients back to nothing.
    assert answer.status == 503
    assert "x-retry-after-ms" not in answer.headers
