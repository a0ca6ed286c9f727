"""Helpers for the fault tests: sockets per user and instance, the balancer's view, presence.

Sockets are the shared ``tests.support.ws_client.WsClient``; what is here builds on it. A
client that must reconnect by itself is the project's client package (through
``tests.support.delivery_client``), never a retry loop of a test's own.
"""

from __future__ import annotations

import functools
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from typing import Any

from scripts.deployment import Cluster
from scripts.procs import DaphneInstance, http_get
from tests.support.async_poll import async_wait_until
from tests.support.delivery_client import DeliveryClient, SocketRecord, clients_close
from tests.support.ws_client import WsClient, frame_is


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


async def open_sockets(cluster: Cluster, *placements: tuple[str, DaphneInstance]) -> list[WsClient]:
    """A socket per ``(name, instance)``, in order, each past its ``connected`` frame; if one
    fails, those already open are closed before the error goes on."""
    opened: list[WsClient] = []
    try:
        for name, instance in placements:
            client, _ = await open_socket(cluster, name, instance.ws_url)
            opened.append(client)
    except BaseException:
        for client in opened:
            await client.close()
        raise
    return opened


async def library_clients(
    cluster: Cluster, names: Iterable[str], instance: DaphneInstance
) -> list[DeliveryClient]:
    """A client of the project's client package per name, on ``instance`` first and the
    balancer after any drop, as a service configured with both URLs would be."""
    clients: list[DeliveryClient] = []
    try:
        for name in names:
            client = DeliveryClient(name=name, token=token(cluster, name), conversations=[])
            clients.append(client)
            await client.connect(instance.ws_url, failover=[cluster.ws_url])
    except BaseException:
        await clients_close(clients)
        raise
    return clients


async def resumed_on(client: DeliveryClient, instance_id: str, *, within: float) -> SocketRecord:
    """The client's socket once it is open on ``instance_id`` and resumed (the package
    reconnects by itself)."""

    def there() -> SocketRecord | None:
        record = client.current
        on_it = record.open and record.instance_id == instance_id
        return record if on_it and record.resume_acked_at is not None else None

    found: SocketRecord = await async_wait_until(
        there, timeout=within, what=f"{client.name} resumed on {instance_id}"
    )
    return found


def health(url: str) -> tuple[int, dict[str, Any]]:
    try:
        status, body = http_get(f"{url}/api/health", timeout=3)
    except OSError:
        return 0, {}
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {}


def _reports(base_url: str, status: str, check: str | None) -> bool:
    body = health(base_url)[1]
    if check is not None:
        body = body.get("checks", {}).get(check, {})
    return body.get("status") == status


async def wait_health(
    instances: Iterable[DaphneInstance],
    status: str,
    *,
    check: str | None = None,
    within: float,
    interval: float,
) -> None:
    """Poll each instance in turn, ``within`` seconds each, until its health (or the ``check``
    named in it) reports ``status``."""
    for instance in instances:
        await async_wait_until(
            functools.partial(_reports, instance.base_url, status, check),
            timeout=within,
            interval=interval,
            what=f"{instance.instance_id} reporting {check or 'health'} {status}",
        )


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


async def presence_past_grace(
    cluster: Cluster, watcher: WsClient, names: Iterable[str], *, since: Stopwatch
) -> tuple[list[dict[str, Any]], set[str]]:
    """Once the grace period since ``since`` (plus a margin) has passed: the ``offline`` frames
    ``watcher`` received, and the statuses the API gives for ``names``."""
    grace = float(cluster.extra_env["PRESENCE_GRACE_SECONDS"])
    await watcher.drain(within=max(0.0, grace + 1.5 - since.seconds()))
    offline = [
        f for f in watcher.frames if f.get("type") == "presence" and f.get("status") == "offline"
    ]
    ids = ",".join(user_id(cluster, name) for name in names)
    statuses = api_get(cluster, f"/api/users/status?ids={ids}", as_user="alice")["users"]
    return offline, {row["status"] for row in statuses}


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
