"""The layer on a Redis Cluster: sharded pub/sub per master; see docs/channel-layer.md.

Each master of the cluster is one ``ClusterEndpoint`` (so one ``ShardLink``, two connections,
per event loop, however many groups there are). A channel's Redis name decides its slot
(``SlotRouter``), the slot its master. Groups and inboxes use ``SPUBLISH``/``SSUBSCRIBE``:
a message travels only to the master of its slot and that master's subscribers, not over the
whole cluster bus as a plain ``PUBLISH`` does.

A ``ClusterEndpoint`` is anchored to the first slot it served when the layer started: on every
(re)connect it asks the cluster which master serves that slot now, so after a failover the link
reconnects to the promoted replica and resubscribes everything it wants, in batches. Named
channels (Redis lists) use a cluster client, which follows MOVED on its own.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import redis
from redis.crc import key_slot

from realtime_layer import clients
from realtime_layer.clients import UNBOUNDED_POOL, Timeouts
from realtime_layer.endpoints import RedisEndpoint

logger = logging.getLogger(__name__)

SlotRange = tuple[int, int]


@dataclass(frozen=True)
class ClusterEndpoint(RedisEndpoint):
    """One master of a Redis Cluster, found again by its anchor slot after a failover."""

    seeds: tuple[tuple[str, int], ...] = ()
    # The slots the layer routes to this endpoint (empty: none any more, after a resharding).
    slots: tuple[SlotRange, ...] = ()
    # The slot whose master this endpoint follows; the first of ``slots`` unless set.
    anchor: int | None = None

    @property
    def sharded(self) -> bool:
        return True

    @property
    def anchor_slot(self) -> int:
        if self.anchor is not None:
            return self.anchor
        return self.slots[0][0] if self.slots else 0

    async def resolve(self, *, limit_seconds: float) -> tuple[str, int]:
        """The master serving the anchor slot now (asks each seed until one answers)."""
        table = await cluster_slots(self, limit_seconds=limit_seconds, covering=self.anchor_slot)
        for start, end, master, _ in table:
            if start <= self.anchor_slot <= end:
                return master
        raise ConnectionError(f"no cluster node knows who serves slot {self.anchor_slot}")

    def client(
        self, *, socket_timeout: float, connect_timeout: float, max_connections: int | None = 4
    ) -> Any:
        """A cluster client: key commands (named channels' lists, PING) follow the slot map."""
        return clients.cluster_client(
            self.seeds,
            timeouts=Timeouts(socket=socket_timeout, connect=connect_timeout),
            username=self.username,
            password=self.password,
            tls=self.tls,
            max_connections=max_connections or UNBOUNDED_POOL,
        )


async def cluster_slots(
    endpoint: ClusterEndpoint,
    *,
    limit_seconds: float,
    first: tuple[str, int] | None = None,
    covering: int | None = None,
) -> list[tuple[int, int, tuple[str, int], list[Any]]]:
    """``CLUSTER SLOTS`` from the first node that answers: ``first`` (the node a MOVED reply
    named, which knows the new owner for certain), then the seeds, then the endpoint itself.
    With ``covering``, a node whose map has no master for that slot (a failover it has not
    seen the end of) is passed over."""
    last: BaseException | None = None
    candidates = [*([first] if first else []), *endpoint.seeds, (endpoint.host, endpoint.port)]
    for host, port in dict.fromkeys(candidates):
        client = clients.node_client(
            host,
            port,
            timeouts=Timeouts(socket=limit_seconds, connect=limit_seconds),
            username=endpoint.username,
            password=endpoint.password,
            tls=endpoint.tls,
        )
        try:
            async with asyncio.timeout(limit_seconds):
                table = _decoded_slots(await client.execute_command("CLUSTER", "SLOTS"))
            if covering is None or any(lo <= covering <= hi for lo, hi, _, _ in table):
                return table
        except Exception as exc:
            last = exc
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
    raise ConnectionError(f"no cluster node answered CLUSTER SLOTS: {last}")


def slot_map_remap(
    endpoints: list[ClusterEndpoint], table: list[tuple[int, int, tuple[str, int], list[Any]]]
) -> tuple[list[ClusterEndpoint], list[tuple[str, int] | None]]:
    """The endpoints after a resharding, by index, and the master each should be linked to.

    An existing endpoint keeps its index and follows the master now serving its anchor slot;
    it routes that master's slots. A master no endpoint follows (added by the resharding) gets
    a new endpoint at the end. An endpoint whose master another endpoint already follows
    routes nothing (its link stays, idle). Indexes never change, so every loop's shard links
    stay where they are and only new ones are appended.
    """
    by_master: dict[tuple[str, int], list[SlotRange]] = {}
    for start, end, master, _ in table:
        by_master.setdefault(master, []).append((start, end))

    def master_of(slot: int) -> tuple[str, int] | None:
        for start, end, master, _ in table:
            if start <= slot <= end:
                return master
        return None

    result: list[ClusterEndpoint] = []
    addresses: list[tuple[str, int] | None] = []
    claimed: set[tuple[str, int]] = set()
    for endpoint in endpoints:
        followed = master_of(endpoint.anchor_slot)
        if followed is None or followed in claimed:
            result.append(dataclasses.replace(endpoint, slots=(), anchor=endpoint.anchor_slot))
            addresses.append(followed)
            continue
        claimed.add(followed)
        owned = tuple(sorted(by_master[followed]))
        result.append(dataclasses.replace(endpoint, slots=owned, anchor=owned[0][0]))
        addresses.append(followed)
    template = endpoints[0]
    for added, ranges in sorted(by_master.items(), key=lambda item: min(item[1])):
        if added in claimed:
            continue
        result.append(
            dataclasses.replace(
                template,
                host=added[0],
                port=added[1],
                name=f"cluster:{added[0]}:{added[1]}",
                slots=tuple(sorted(ranges)),
                anchor=None,
            )
        )
        addresses.append(added)
    return result, addresses


def _decoded_slots(table: Any) -> list[tuple[int, int, tuple[str, int], list[Any]]]:
    rows = []
    for entry in table:
        start, end, master = int(entry[0]), int(entry[1]), entry[2]
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        rows.append((start, end, (host, int(master[1])), list(entry[3:])))
    return rows


def cluster_endpoints(urls: list[str], *, connect_timeout: float) -> list[ClusterEndpoint]:
    """One endpoint per master, from the first seed that answers ``CLUSTER SLOTS``.

    Runs once, when the layer is built. A cluster that answers nowhere leaves the layer with
    one endpoint per seed anchored at slot 0, degraded until a seed answers (its publishes
    then fail and are counted, as on a single node that is down).
    """
    seeds = tuple(clients.url_address(url) for url in urls)
    auth: dict[str, Any] = {
        k: v for k, v in clients.url_auth(urls[0]).items() if k in ("username", "password")
    }
    for host, port in seeds:
        client = clients.sync_node_client(
            host, port, timeouts=Timeouts(socket=connect_timeout, connect=connect_timeout), **auth
        )
        try:
            table = client.execute_command("CLUSTER", "SLOTS")
        except (redis.RedisError, OSError) as exc:
            logger.warning("layer: cluster seed %s:%s did not answer (%r)", host, port, exc)
            continue
        finally:
            client.close()
        by_master: dict[tuple[str, int], list[SlotRange]] = {}
        for start, end, master, _ in _decoded_slots(table):
            by_master.setdefault(master, []).append((start, end))
        return [
            ClusterEndpoint(
                host=host_port[0],
                port=host_port[1],
                name=f"cluster:{host_port[0]}:{host_port[1]}",
                seeds=seeds,
                slots=tuple(sorted(ranges)),
                **auth,
            )
            for host_port, ranges in sorted(by_master.items(), key=lambda item: min(item[1]))
        ]
    return [
        ClusterEndpoint(host=seeds[0][0], port=seeds[0][1], name="cluster:unknown",
                        seeds=seeds, slots=((0, 16383),), **auth)
    ]  # fmt: skip


class SlotRouter:
    """Which endpoint a channel lives on: the master of its Redis name's slot.

    The layer asks with a group's name (its Redis channel is ``<prefix>:g:<group>``), an
    inbox's full Redis name (it has a colon; group names cannot), or a named channel.
    """

    def __init__(self, endpoints: list[ClusterEndpoint], prefix: str) -> None:
        self._group_prefix = f"{prefix}:g:"
        starts: list[tuple[int, int, int]] = []
        for index, endpoint in enumerate(endpoints):
            for start, end in endpoint.slots:
                starts.append((start, end, index))
        starts.sort()
        self._starts = [start for start, _, _ in starts]
        self._ranges = starts

    def node_for(self, name: str) -> int:
        redis_name = name if ":" in name else self._group_prefix + name
        slot = key_slot(redis_name.encode())
        position = bisect.bisect_right(self._starts, slot) - 1
        if position < 0:
            return 0
        start, end, index = self._ranges[position]
        return index if start <= slot <= end else 0
