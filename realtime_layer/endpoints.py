"""Where the layer's Redis nodes are, and which node a group lives on; see docs/channel-layer.md.

A node is a plain URL or a Sentinel-monitored master (resolved again on every reconnect, so a
failover moves the layer to the new master). Groups and inboxes are spread over the nodes by a
consistent hash ring, so adding a node moves only about 1/N of the groups.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, SSLConnection, parse_url

from realtime_layer import clients
from realtime_layer.clients import Timeouts

VIRTUAL_NODES_PER_NODE = 64


def redacted_url(url: str) -> str:
    """``url`` fit to be logged, shown or used as a name: no password, no user, no query
    (redis-py reads ``?password=`` too). ``redis://:pw@host:6379/0`` -> ``redis://***@host:6379/0``.
    """
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "<unparsable Redis URL>"
    secret = "***@" if parts.username or parts.password or parts.query else ""
    if not host:  # a Unix socket: its path names it
        return f"{parts.scheme}://{secret}{parts.path}"
    where = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{secret}{where}{f':{port}' if port else ''}{parts.path}"


@dataclass(frozen=True)
class RedisEndpoint:
    """One Redis node: fixed address, or the master a set of Sentinels names."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = ""
    name: str = field(default="")

    @property
    def sharded(self) -> bool:
        """Whether this node takes sharded pub/sub (SPUBLISH/SSUBSCRIBE): a cluster master."""
        return False

    @classmethod
    def from_url(cls, url: str) -> RedisEndpoint:
        kwargs = parse_url(url)
        return cls(
            host=str(kwargs.get("host", "127.0.0.1")),
            port=int(kwargs.get("port", 6379)),
            db=int(kwargs.get("db", 0) or 0),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            tls=kwargs.get("connection_class") is SSLConnection,
            # Logged, and the node's key on the hash ring: never the password (and a rotated
            # password moves no group to another node).
            name=redacted_url(url),
        )

    @classmethod
    def from_sentinels(
        cls, sentinels: list[str], master: str, *, password: str | None = None
    ) -> RedisEndpoint:
        pairs = []
        for item in sentinels:
            host, _, port = item.strip().rpartition(":")
            pairs.append((host or "127.0.0.1", int(port or 26379)))
        return cls(
            sentinels=tuple(pairs),
            sentinel_master=master,
            password=password,
            name=f"sentinel:{master}",
        )

    def connection(self, *, host: str, port: int, connect_timeout: float) -> Connection:
        """A dedicated redis-py connection for one of the layer's two hot paths (no socket
        timeout: the layer bounds every read and write itself, below the one it was given)."""
        return clients.dedicated_connection(
            host,
            port,
            connect_timeout=connect_timeout,
            username=self.username,
            password=self.password,
            tls=self.tls,
        )

    async def resolve(self, *, limit_seconds: float) -> tuple[str, int]:
        """The address to connect to now (asks the Sentinels for the current master)."""
        if not self.sentinels:
            return self.host, self.port
        sentinel = clients.sentinels(
            self.sentinels, timeouts=Timeouts(socket=limit_seconds, connect=limit_seconds)
        )
        try:
            host, port = await sentinel.discover_master(self.sentinel_master)
        finally:
            for client in sentinel.sentinels:
                await client.aclose()
        return str(host), int(port)

    def client(
        self, *, socket_timeout: float, connect_timeout: float, max_connections: int | None = 4
    ) -> aioredis.Redis:
        """A pooled redis-py client for commands off the hot path (PING, named channels).

        ``max_connections`` None: ``clients.POOL_SIZE`` on a node (a Sentinel master's pool has
        that size always), no limit on a cluster (``ClusterEndpoint``).
        """
        timeouts = Timeouts(socket=socket_timeout, connect=connect_timeout)
        if self.sentinels:
            return clients.sentinel_master_client(
                self.sentinels, self.sentinel_master, timeouts=timeouts, password=self.password
            )
        return clients.node_client(
            self.host,
            self.port,
            timeouts=timeouts,
            db=self.db,
            username=self.username,
            password=self.password,
            tls=self.tls,
            # None is redis-py's default size, as redis-py itself reads it.
            max_connections=max_connections or clients.POOL_SIZE,
        )


class HashRing:
    """Consistent hashing of names onto node indexes."""

    def __init__(self, node_names: list[str]) -> None:
        self.size = len(node_names)
        points: list[tuple[int, int]] = []
        for index, name in enumerate(node_names):
            for replica in range(VIRTUAL_NODES_PER_NODE):
                points.append((_hash(f"{name}#{replica}"), index))
        points.sort()
        self._keys = [point for point, _ in points]
        self._nodes = [node for _, node in points]

    def node_for(self, name: str) -> int:
        if self.size <= 1:
            return 0
        position = bisect.bisect(self._keys, _hash(name)) % len(self._keys)
        return self._nodes[position]


def _hash(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")
