"""Helpers for the fault tests: sockets per user and instance, the balancer's view, presence."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from scripts.cluster import Cluster
from scripts.procs import http_get
from tests.support.async_poll import async_wait_until

Frame = dict[str, Any]


def frame_is(frame_type: str, **fields: Any) -> Callable[[Frame], bool]:
    def check(frame: Frame) -> bool:
        return frame.get("type") == frame_type and all(frame.get(k) == v for k, v in fields.items())

    return check


class WsClient:
    """A socket that keeps every frame it received, so a test can look back at all of them."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.frames: list[Frame] = []
        self._seen = 0  # frames[:_seen] were already searched by recv_until

    @classmethod
    async def open(cls, url: str, *, token: str) -> WsClient:
        connection = await connect(
            f"{url}?token={token}", open_timeout=5, ping_interval=None, proxy=None
        )
        return cls(connection)

    async def send(self, frame: Frame) -> None:
        await self.connection.send(json.dumps(frame))

    async def recv_until(self, predicate: Callable[[Frame], bool], *, within: float = 5) -> Frame:
        """The first frame received (from now back to the last match) matching ``predicate``."""
        for index in range(self._seen, len(self.frames)):
            if predicate(self.frames[index]):
                self._seen = index + 1
                return self.frames[index]
        self._seen = len(self.frames)
        deadline = time.monotonic() + within
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(self.connection.recv(), remaining)
            except TimeoutError:
                break
            frame = json.loads(raw)
            self.frames.append(frame)
            self._seen = len(self.frames)
            if predicate(frame):
                return frame
        raise TimeoutError(f"no matching frame within {within}s; last: {self.frames[-5:]}")

    async def drain(self, *, within: float = 0.2) -> None:
        """Read whatever arrives within ``within`` seconds (to count duplicates)."""
        with_deadline = time.monotonic() + within
        while (remaining := with_deadline - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(self.connection.recv(), remaining)
            except TimeoutError:
                return
            self.frames.append(json.loads(raw))

    async def wait_closed(self, *, within: float = 10) -> int | None:
        """Read until the server closes; its close code."""
        deadline = time.monotonic() + within
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                raw = await asyncio.wait_for(self.connection.recv(), remaining)
                self.frames.append(json.loads(raw))
        except websockets.ConnectionClosed:
            return self.close_code
        raise TimeoutError(f"socket still open after {within}s")

    @property
    def is_open(self) -> bool:
        return self.connection.state is State.OPEN

    @property
    def close_code(self) -> int | None:
        """The code the server closed with; 1006 when the connection just dropped."""
        return self.connection.close_code

    async def close(self) -> None:
        await self.connection.close()


def token(cluster: Cluster, name: str) -> str:
    return str(cluster.demo["users"][name]["token"])


def user_id(cluster: Cluster, name: str) -> str:
    return str(cluster.demo["users"][name]["id"])


def conversation(cluster: Cluster, title: str) -> str:
    return str(cluster.demo["conversations"][title]["id"])


async def open_socket(cluster: Cluster, name: str, url: str) -> tuple[WsClient, dict[str, Any]]:
    """A socket for ``name`` at ``url`` and its ``connected`` frame."""
    client = await WsClient.open(url, token=token(cluster, name))
    hello = await client.recv_until(frame_is("connected"), within=10)
    return client, hello


async def reconnect_through(cluster: Cluster, name: str, *, within: float = 15) -> WsClient:
    """Reconnect as a client library would: retry through the balancer until welcomed."""

    async def attempt() -> WsClient | None:
        try:
            client, _ = await open_socket(cluster, name, cluster.ws_url)
        except Exception:
            return None
        return client

    client: WsClient = await async_wait_until(
        attempt, timeout=within, interval=0.2, what=f"{name} reconnecting"
    )
    return client


def health(url: str) -> tuple[int, dict[str, Any]]:
    try:
        status, body = http_get(f"{url}/api/health", timeout=3)
    except OSError:
        return 0, {}
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {}


def api_get(cluster: Cluster, path: str, *, as_user: str = "admin") -> Any:
    request = urllib.request.Request(
        f"{cluster.url}{path}", headers={"Authorization": f"Token {token(cluster, as_user)}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def registry_connections(cluster: Cluster) -> dict[str, int]:
    """``{instance_id: live connections}`` as the registry (Redis) holds them."""
    stats = api_get(cluster, "/api/connections/stats")
    return {row["instance_id"]: int(row["connections"]) for row in stats["instances"]}


def duplicates(client: WsClient) -> list[str]:
    """Event ids this socket received more than once."""
    counts = Counter(f["event_id"] for f in client.frames if "event_id" in f)
    return [event_id for event_id, n in counts.items() if n > 1]


def firestore_status(cluster: Cluster, uid: str) -> str | None:
    """The presence document as stored in the emulator, read over its REST API."""
    assert cluster.firestore is not None
    url = (
        f"http://{cluster.firestore.host}/v1/projects/{cluster.firestore.project_id}"
        f"/databases/(default)/documents/users/{uid}"
    )
    status, body = http_get(url, timeout=2)
    if status != 200:
        return None
    fields = json.loads(body).get("fields", {})
    value = fields.get("status", {}).get("stringValue")
    return str(value) if value is not None else None


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def seconds(self) -> float:
        return round(time.monotonic() - self.start, 3)
