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
from redis.asyncio.sentinel import Sentinel

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
        """A dedicated redis-py connection for one of the layer's two hot paths.

        RESP2, so pub/sub messages arrive as plain arrays (hiredis parses them when installed).
        No socket timeout: the layer bounds every read and write itself, below the socket
        timeout it was given (redis-py 8's 5 s default would cut idle reads).
        """
        connection_class = SSLConnection if self.tls else Connection
        return connection_class(
            host=host,
            port=port,
            username=self.username,
            password=self.password,
            protocol=2,
            socket_timeout=None,
            socket_connect_timeout=connect_timeout,
        )

    async def resolve(self, *, limit_seconds: float) -> tuple[str, int]:
        """The address to connect to now (asks the Sentinels for the current master)."""
        if not self.sentinels:
            return self.host, self.port
        sentinel = Sentinel(list(self.sentinels), socket_timeout=limit_seconds)
        try:
            host, port = await sentinel.discover_master(self.sentinel_master)
        finally:
            for client in sentinel.sentinels:
                await client.aclose()
        return str(host), int(port)

    def client(
        self, *, socket_timeout: float, connect_timeout: float, max_connections: int | None = 4
    ) -> aioredis.Redis:
        """A pooled redis-py client for commands off the hot path (PING, named channels)."""
        if self.sentinels:
            sentinel = Sentinel(
                list(self.sentinels),
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
            )
            master: aioredis.Redis = sentinel.master_for(
                self.sentinel_master,
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                password=self.password,
            )
            return master
        return aioredis.Redis(
            host=self.host,
            port=self.port,
            db=self.db,
            username=self.username,
            password=self.password,
            ssl=self.tls,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            max_connections=max_connections,
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
