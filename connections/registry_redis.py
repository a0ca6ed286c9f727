"""The Redis-backed connection registry. See docs/registry.md for the keys and the lease.

A connect is one Lua script on the user's slot (socket limit, registry entry, offline deadline
cancelled) and, on a Redis Cluster, one more write on the instance's slot: one round trip on a
single node, two on a cluster. A disconnect is one round trip (on a cluster its two writes go to
their nodes concurrently). On a single node (or Sentinel) the scripts of every socket that
connects or closes in the same moment share a pipeline (``connections.registry_batch``): a
storm of connects or a mass close is a few round trips on one pooled connection. The
heartbeat is one round trip per instance (two when it has to replay after Redis lost this
instance's data). A Redis failure never leaves
``register``/``unregister``: the local truth is kept and replayed by the next heartbeat that
reaches Redis.

Keys carry hash tags (``connections.topology``): everything about one user (and the offline
deadline set of the user's bucket) shares a slot, everything about one instance shares another.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any

from connections.registry_batch import ScriptBatcher
from connections.registry_types import (
    ConnectionInfo,
    ConnectionRegistry,
    SocketLimitReached,
    utc_from_timestamp,
)
from connections.topology import (
    REDIS_ERRORS,
    LoopClients,
    RedisTopology,
    instance_tag,
    user_tag,
)

logger = logging.getLogger(__name__)

KEY_PREFIX = "rt:reg:"
# Kept data outlives the lease so that a survivor can still read (and reap) a dead instance's
# connections; every key has this TTL, renewed by its owner's heartbeat.
DATA_TTL_LEASES = 3

# Claim a lapsed instance only if its heartbeat is still older than the cutoff, so that of two
# reapers exactly one wins, and an instance that beat again in the meantime is spared.
_CLAIM_DEAD = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) < tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


# The user's side of a connect, atomically: drop entries of instances known dead, refuse past
# the limit, add the entry, cancel the offline deadline; on one node (no cluster) the
# instance's side too. KEYS: user hash, [deadline set], [instance conns, instance users,
# instance set]. ARGV: cid, iid, limit (0: none), data ttl ms, uid, encoded entry, local user
# count, has deadline (0/1), has instance keys (0/1), now ms ('' once the instance has beaten:
# before that a connect announces it), dead instance ids...
# Returns {admitted (0/1), the user's live connections before this one}.
_CONNECT = """
local dead = {}
for i = 11, #ARGV do dead[ARGV[i]] = true end
local entries = redis.call('HGETALL', KEYS[1])
local count = 0
for i = 1, #entries, 2 do
  if dead[entries[i + 1]] then
    redis.call('HDEL', KEYS[1], entries[i])
  elseif entries[i] ~= ARGV[1] then
    count = count + 1
  end
end
local limit = tonumber(ARGV[3])
if limit > 0 and count >= limit then
  return {0, count}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local n = 1
if ARGV[8] == '1' then
  n = 2
  redis.call('ZREM', KEYS[2], ARGV[5])
end
if ARGV[9] == '1' then
  redis.call('HSET', KEYS[n + 1], ARGV[1], ARGV[6])
  redis.call('PEXPIRE', KEYS[n + 1], ARGV[4])
  redis.call('HSET', KEYS[n + 2], ARGV[5], ARGV[7])
  redis.call('PEXPIRE', KEYS[n + 2], ARGV[4])
  if ARGV[10] ~= '' then
    redis.call('ZADD', KEYS[n + 3], ARGV[10], ARGV[2])
    redis.call('PEXPIRE', KEYS[n + 3], ARGV[4])
  end
end
return {1, count}
"""

# The user's side of a disconnect: remove the entry, count the user's connections on other
# live instances, and when none is left anywhere set the offline deadline (only if the
# caller's own count is zero too). KEYS: user hash, [deadline set], [instance conns, users].
# ARGV: cid, iid, uid, local user count, deadline, deadline set ttl s, has deadline,
# has instance keys, dead instance ids... Returns the count on other instances.
_DISCONNECT = """
local dead = {}
for i = 9, #ARGV do dead[ARGV[i]] = true end
redis.call('HDEL', KEYS[1], ARGV[1])
local entries = redis.call('HGETALL', KEYS[1])
local remote = 0
for i = 1, #entries, 2 do
  local owner = entries[i + 1]
  if owner ~= ARGV[2] and not dead[owner] then
    remote = remote + 1
  end
end
local n = 1
if ARGV[7] == '1' then
  n = 2
  if remote == 0 and tonumber(ARGV[4]) == 0 then
    redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3])
    redis.call('EXPIRE', KEYS[2], ARGV[6])
  end
end
if ARGV[8] == '1' then
  redis.call('HDEL', KEYS[n + 1], ARGV[1])
  if tonumber(ARGV[4]) > 0 then
    redis.call('HSET', KEYS[n + 2], ARGV[3], ARGV[4])
  else
    redis.call('HDEL', KEYS[n + 2], ARGV[3])
  end
end
return remote
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


class RedisConnectionRegistry(ConnectionRegistry):
    def __init__(
        self,
        *,
        instance_id: str,
        redis_url: str | None = None,
        topology: RedisTopology | None = None,
        ttl_seconds: float | None = None,
        key_prefix: str = KEY_PREFIX,
    ) -> None:
        super().__init__(instance_id=instance_id, ttl_seconds=ttl_seconds)
        if topology is None:
            if redis_url is None:
                raise ValueError("a Redis registry needs a topology or a URL")
            topology = RedisTopology(mode="single", urls=(redis_url,))
        self.topology = topology
        self._clients = LoopClients(topology)
        self._scripts = ScriptBatcher(self._clients)
        self._prefix = key_prefix
        # Instances whose lease had lapsed at the last heartbeat: the connect and disconnect
        # scripts ignore (and clean) their entries without reading the instance set, which
        # lives on another slot of a cluster. An instance not known yet counts as alive.
        self._dead: set[str] = set()
        # Whether a heartbeat (or replay) has put this instance in the instance set.
        self._announced = False
        # Set when Redis failed or lost our data: the next heartbeat rewrites everything.
        self._needs_replay = True
        # Set after a failed call so that connects do not each wait on a dead Redis.
        self._redis_down = False
        self._dirty: set[str] = set()
        # Sockets closed while Redis was unreachable: their entries are removed at replay.
        self._closed_while_down: dict[str, str] = {}
        self._generation = 0
        self._counters: dict[str, float] = {}

    # -- keys --------------------------------------------------------------------------------

    def _k_lease(self, iid: str) -> str:
        return f"{self._prefix}{instance_tag(iid)}:lease"

    def _k_instances(self) -> str:
        return f"{self._prefix}instances"

    def _k_conns(self, iid: str) -> str:
        return f"{self._prefix}{instance_tag(iid)}:conns"

    def _k_iusers(self, iid: str) -> str:
        return f"{self._prefix}{instance_tag(iid)}:iusers"

    def _k_user(self, uid: str) -> str:
        return f"{self._prefix}{user_tag(uid)}:user:{uid}"

    def _k_counters(self, iid: str) -> str:
        return f"{self._prefix}{instance_tag(iid)}:counters"

    def key_conns(self, iid: str) -> str:
        """The hash of an instance's connections (tests and operators read it)."""
        return self._k_conns(iid)

    def key_user(self, uid: str) -> str:
        return self._k_user(uid)

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_seconds * 1000))

    @property
    def _data_ttl_ms(self) -> int:
        return self._ttl_ms * DATA_TTL_LEASES

    @property
    def degraded(self) -> bool:
        return self._redis_down

    # -- encoding ----------------------------------------------------------------------------

    @staticmethod
    def _encode(info: ConnectionInfo) -> str:
        return json.dumps(
            {
                "u": info.user_id,
                "c": info.connected_at.timestamp(),
                "s": info.last_seen.timestamp(),
                "m": info.metadata,
            },
            separators=(",", ":"),
        )

    def _decode(self, cid: str, iid: str, raw: str, heartbeat_ms: float) -> ConnectionInfo:
        data = json.loads(raw)
        return ConnectionInfo(
            connection_id=cid,
            user_id=str(data["u"]),
            instance_id=iid,
            connected_at=utc_from_timestamp(float(data["c"])),
            last_seen=utc_from_timestamp(float(data["s"])),
            expires_at=utc_from_timestamp(heartbeat_ms / 1000 + self.ttl_seconds),
            metadata={str(k): str(v) for k, v in dict(data.get("m") or {}).items()},
        )

    def _alive(self, heartbeats: dict[str, float], now_ms: int | None = None) -> set[str]:
        cutoff = (now_ms if now_ms is not None else _now_ms()) - self._ttl_ms
        return {iid for iid, beat in heartbeats.items() if beat >= cutoff}

    async def _heartbeats(self) -> dict[str, float]:
        pairs: list[Any] = await self._clients.get().zrange(
            self._k_instances(), 0, -1, withscores=True
        )
        return {str(iid): float(score) for iid, score in pairs}

    def _mark_failed(self, what: str, exc: BaseException) -> None:
        if not self._needs_replay:
            logger.warning("registry: Redis failed during %s (%r); keeping local truth", what, exc)
        self._needs_replay = True
        self._redis_down = True

    # -- writes ------------------------------------------------------------------------------

    async def register(
        self,
        *,
        connection_id: str,
        user_id: str,
        metadata: dict[str, str],
        max_sockets: int | None = None,
        deadline_key: str | None = None,
    ) -> ConnectionInfo:
        if self._redis_down:
            # Redis is known to be away: the limit holds per instance, and the heartbeat
            # replays this socket once Redis is back.
            if max_sockets is not None and self._local_user_count(user_id) >= max_sockets:
                raise SocketLimitReached(user_id, self._local_user_count(user_id))
            return self._admit_locally(connection_id, user_id, metadata)
        info = self._local_add(connection_id=connection_id, user_id=user_id, metadata=metadata)
        self._closed_while_down.pop(connection_id, None)
        self._generation += 1
        cluster = self.topology.cluster
        iid = self.instance_id
        keys = [self._k_user(user_id)]
        if deadline_key is not None:
            keys.append(deadline_key)
        if not cluster:
            keys += [self._k_conns(iid), self._k_iusers(iid), self._k_instances()]
        args: list[Any] = [
            connection_id,
            iid,
            max_sockets or 0,
            self._data_ttl_ms,
            user_id,
            self._encode(info),
            self._local_user_count(user_id),
            "1" if deadline_key is not None else "0",
            "0" if cluster else "1",
            # Until its first heartbeat a connect proves the instance's liveness, so that a
            # crash before that beat still leaves its sockets reapable.
            "" if self._announced else _now_ms(),
            *sorted(self._dead),
        ]
        try:
            if cluster:
                client = self._clients.get()
                admitted, before = await client.eval(_CONNECT, len(keys), *keys, *args)
                if int(admitted):
                    await self._instance_write(client, connection_id, user_id, info)
            else:
                admitted, before = await self._scripts.run(_CONNECT, keys, args)
        except REDIS_ERRORS as exc:
            self._mark_failed("register", exc)
            return info
        if not int(admitted):
            self._local_remove(connection_id=connection_id, user_id=user_id)
            self._generation += 1
            raise SocketLimitReached(user_id, int(before))
        return info

    def _admit_locally(
        self, connection_id: str, user_id: str, metadata: dict[str, str]
    ) -> ConnectionInfo:
        info = self._local_add(connection_id=connection_id, user_id=user_id, metadata=metadata)
        self._closed_while_down.pop(connection_id, None)
        self._generation += 1
        return info

    async def _instance_write(
        self, client: Any, connection_id: str, user_id: str, info: ConnectionInfo
    ) -> None:
        """The instance's side of a connect, on its own slot (cluster only)."""
        data_ttl = self._data_ttl_ms
        iid = self.instance_id
        pipe = client.pipeline(transaction=False)
        pipe.hset(self._k_conns(iid), connection_id, self._encode(info))
        pipe.pexpire(self._k_conns(iid), data_ttl)
        pipe.hset(self._k_iusers(iid), user_id, self._local_user_count(user_id))
        pipe.pexpire(self._k_iusers(iid), data_ttl)
        if not self._announced:
            pipe.zadd(self._k_instances(), {iid: _now_ms()})
            pipe.pexpire(self._k_instances(), data_ttl)
        await pipe.execute()

    @property
    def writes_deadlines(self) -> bool:
        """Whether the last connect/disconnect scripts could carry the offline deadline."""
        return not self._redis_down

    async def unregister(
        self,
        *,
        connection_id: str,
        user_id: str,
        offline_deadline: tuple[str, float] | None = None,
    ) -> int:
        info = self._local_remove(connection_id=connection_id, user_id=user_id)
        owner = info.user_id if info is not None else user_id
        self._dirty.discard(connection_id)
        self._generation += 1
        local = self._local_user_count(owner)
        if self._redis_down:
            self._closed_while_down[connection_id] = owner
            return local
        cluster = self.topology.cluster
        iid = self.instance_id
        keys = [self._k_user(owner)]
        deadline_at = 0.0
        if offline_deadline is not None:
            keys.append(offline_deadline[0])
            deadline_at = offline_deadline[1]
        if not cluster:
            keys += [self._k_conns(iid), self._k_iusers(iid)]
        args: list[Any] = [
            connection_id,
            iid,
            owner,
            local,
            deadline_at,
            int(max(3600, (deadline_at - time.time()) * 2)),
            "1" if offline_deadline is not None else "0",
            "0" if cluster else "1",
            *sorted(self._dead),
        ]
        try:
            if cluster:
                # Two slots, two nodes: both writes travel at once (one round trip of waiting).
                client = self._clients.get()
                script = client.eval(_DISCONNECT, len(keys), *keys, *args)
                pipe = client.pipeline(transaction=False)
                pipe.hdel(self._k_conns(iid), connection_id)
                if local:
                    pipe.hset(self._k_iusers(iid), owner, local)
                else:
                    pipe.hdel(self._k_iusers(iid), owner)
                remote, _ = await asyncio.gather(script, pipe.execute())
            else:
                remote = await self._scripts.run(_DISCONNECT, keys, args)
        except REDIS_ERRORS as exc:
            self._closed_while_down[connection_id] = owner
            self._mark_failed("unregister", exc)
            return local
        return local + int(remote)

    async def touch(self, *, connection_id: str) -> None:
        if self._local_touch(connection_id):
            self._dirty.add(connection_id)

    async def heartbeat(self, *, counters: dict[str, float] | None = None) -> None:
        if counters is not None:
            self._counters = {str(k): float(v) for k, v in counters.items()}
        now_ms = _now_ms()
        self._last_heartbeat = now_ms / 1000
        if self._needs_replay:
            await self._replay_or_mark()
            return
        data_ttl = self._data_ttl_ms
        dirty = [c for c in self._dirty if c in self._local]
        self._dirty.clear()
        try:
            pipe = self._clients.get().pipeline(transaction=False)
            # GET returns the previous value: a missing lease means Redis lost it (or we were
            # reaped while stalled), so everything is written again.
            pipe.set(self._k_lease(self.instance_id), now_ms, px=self._ttl_ms, get=True)
            pipe.zadd(self._k_instances(), {self.instance_id: now_ms})
            pipe.pexpire(self._k_instances(), data_ttl)
            if dirty:
                mapping: dict[Any, Any] = {c: self._encode(self._local[c]) for c in dirty}
                pipe.hset(self._k_conns(self.instance_id), mapping=mapping)
            pipe.pexpire(self._k_conns(self.instance_id), data_ttl)
            pipe.pexpire(self._k_iusers(self.instance_id), data_ttl)
            for uid in self._by_user:
                pipe.pexpire(self._k_user(uid), data_ttl)
            self._queue_counters(pipe)
            pipe.zrange(self._k_instances(), 0, -1, withscores=True)
            results = await pipe.execute()
        except REDIS_ERRORS as exc:
            self._dirty.update(dirty)
            self._mark_failed("heartbeat", exc)
            return
        self._note_dead(results[-1], now_ms)
        self._announced = True
        if results[0] is None:
            logger.warning("registry: lease of %s was missing; registering again", self.instance_id)
            self._needs_replay = True
            await self._replay_or_mark()

    def _note_dead(self, pairs: list[Any], now_ms: int) -> None:
        heartbeats = {str(i): float(score) for i, score in pairs}
        self._dead = set(heartbeats) - self._alive(heartbeats, now_ms) - {self.instance_id}

    def _queue_counters(self, pipe: Any) -> None:
        counters = dict(self._counters)
        counters["connections"] = float(len(self._local))
        counters["updated_at"] = time.time()
        pipe.hset(self._k_counters(self.instance_id), mapping=counters)
        pipe.pexpire(self._k_counters(self.instance_id), self._data_ttl_ms)

    async def _replay_or_mark(self) -> None:
        # A socket that connects while the replay is in flight changes the generation; replay
        # again so that it is not left out.
        for _ in range(3):
            generation = self._generation
            try:
                await self._replay()
            except REDIS_ERRORS as exc:
                self._needs_replay = True
                self._redis_down = True
                logger.debug("registry: replay failed (%r)", exc)
                return
            self._redis_down = False
            self._announced = True
            if generation == self._generation:
                self._needs_replay = False
                return

    async def _replay(self) -> None:
        """Write this instance's whole local truth, replacing whatever Redis holds for it."""
        now_ms = _now_ms()
        data_ttl = self._data_ttl_ms
        iid = self.instance_id
        # On one node the rewrite is atomic; a cluster cannot run a transaction across slots,
        # and the instance's own keys (one slot) are rewritten in order.
        pipe = self._clients.get().pipeline(transaction=not self.topology.cluster)
        pipe.delete(self._k_conns(iid))
        pipe.delete(self._k_iusers(iid))
        if self._local:
            pipe.hset(
                self._k_conns(iid), mapping={c: self._encode(i) for c, i in self._local.items()}
            )
            pipe.hset(
                self._k_iusers(iid), mapping={u: len(cids) for u, cids in self._by_user.items()}
            )
        pipe.pexpire(self._k_conns(iid), data_ttl)
        pipe.pexpire(self._k_iusers(iid), data_ttl)
        for uid, cids in self._by_user.items():
            pipe.hset(self._k_user(uid), mapping=dict.fromkeys(cids, iid))
            pipe.pexpire(self._k_user(uid), data_ttl)
        closed = dict(self._closed_while_down)
        for cid, uid in closed.items():
            pipe.hdel(self._k_user(uid), cid)
        pipe.set(self._k_lease(iid), now_ms, px=self._ttl_ms)
        pipe.zadd(self._k_instances(), {iid: now_ms})
        pipe.pexpire(self._k_instances(), data_ttl)
        self._queue_counters(pipe)
        await pipe.execute()
        for cid in closed:
            self._closed_while_down.pop(cid, None)
        self._dirty.clear()

    async def reap_dead_instances(self) -> list[str]:
        client = self._clients.get()
        now_ms = _now_ms()
        cutoff = now_ms - self._ttl_ms
        try:
            candidates: list[Any] = await client.zrangebyscore(
                self._k_instances(), "-inf", f"({cutoff}"
            )
            users: set[str] = set()
            for iid in map(str, candidates):
                if iid == self.instance_id:
                    continue
                claimed = await client.eval(_CLAIM_DEAD, 1, self._k_instances(), iid, cutoff)
                if int(claimed) != 1:
                    continue
                lost = await self._purge_instance(iid)
                users.update(lost)
                logger.info("registry: reaped instance %s (%d users)", iid, len(lost))
        except REDIS_ERRORS as exc:
            logger.debug("registry: reaper could not reach Redis (%r)", exc)
            return []
        return sorted(users)

    async def _purge_instance(self, iid: str) -> set[str]:
        client = self._clients.get()
        entries: dict[Any, Any] = await client.hgetall(self._k_conns(iid))
        owners: dict[str, str] = {}
        for cid, raw in entries.items():
            try:
                owners[cid] = str(json.loads(raw)["u"])
            except (ValueError, KeyError, TypeError):
                continue
        pipe = client.pipeline(transaction=False)
        for cid, uid in owners.items():
            pipe.hdel(self._k_user(uid), cid)
        # Deleting the lease makes a stalled-but-alive owner replay at its next heartbeat.
        # One slot (the instance's tag), so one DEL also works on a cluster.
        pipe.delete(
            self._k_conns(iid), self._k_iusers(iid), self._k_lease(iid), self._k_counters(iid)
        )
        pipe.zrem(self._k_instances(), iid)
        await pipe.execute()
        return set(owners.values())

    async def remove_instance(self) -> list[str]:  # type: ignore[override]
        users = set(self._by_user)
        self._local.clear()
        self._by_user.clear()
        self._dirty.clear()
        self._generation += 1
        try:
            await self._purge_instance(self.instance_id)
        except REDIS_ERRORS as exc:
            logger.warning("registry: could not remove instance entries (%r)", exc)
        return sorted(users)

    # -- reads -------------------------------------------------------------------------------

    async def _user_entries(self, user_ids: list[str]) -> tuple[list[dict[str, str]], set[str]]:
        pipe = self._clients.get().pipeline(transaction=False)
        for uid in user_ids:
            pipe.hgetall(self._k_user(uid))
        pipe.zrange(self._k_instances(), 0, -1, withscores=True)
        results = await pipe.execute()
        alive = self._alive({str(i): float(s) for i, s in results[-1]})
        return list(results[:-1]), alive

    async def user_connection_count(self, user_id: str) -> int:
        return (await self.users_connection_counts([user_id]))[user_id]

    async def users_connection_counts(self, user_ids: list[str]) -> dict[str, int]:
        local = {uid: self._local_user_count(uid) for uid in user_ids}
        if not user_ids:
            return {}
        try:
            entries, alive = await self._user_entries(user_ids)
        except REDIS_ERRORS:
            return local
        counts: dict[str, int] = {}
        for uid, owned in zip(user_ids, entries, strict=True):
            remote = sum(1 for iid in owned.values() if iid != self.instance_id and iid in alive)
            counts[uid] = local[uid] + remote
        return counts

    async def user_connections(self, user_id: str) -> list[ConnectionInfo]:
        mine = self._local_for_user(user_id)
        try:
            entries, alive = await self._user_entries([user_id])
            by_instance: dict[str, list[str]] = {}
            for cid, iid in entries[0].items():
                if iid != self.instance_id and iid in alive:
                    by_instance.setdefault(iid, []).append(cid)
            if not by_instance:
                return mine
            heartbeats = await self._heartbeats()
            pipe = self._clients.get().pipeline(transaction=False)
            order = sorted(by_instance)
            for iid in order:
                pipe.hmget(self._k_conns(iid), by_instance[iid])
            results = await pipe.execute()
        except REDIS_ERRORS:
            return mine
        others: list[ConnectionInfo] = []
        for iid, raws in zip(order, results, strict=True):
            for cid, raw in zip(by_instance[iid], raws, strict=True):
                if raw is not None:
                    others.append(self._decode(cid, iid, raw, heartbeats.get(iid, 0.0)))
        return sorted(mine + others, key=lambda c: (c.connected_at, c.connection_id))

    async def instance_connections(self, instance_id: str) -> list[ConnectionInfo]:
        if instance_id == self.instance_id:
            return sorted(self.local_connections(), key=lambda c: c.connection_id)
        client = self._clients.get()
        try:
            raw_entries: dict[Any, Any] = await client.hgetall(self._k_conns(instance_id))
            beat = await client.zscore(self._k_instances(), instance_id)
        except REDIS_ERRORS:
            return []
        return sorted(
            (self._decode(c, instance_id, r, float(beat or 0)) for c, r in raw_entries.items()),
            key=lambda c: c.connection_id,
        )

    async def stats(self) -> dict[str, Any]:
        try:
            heartbeats = await self._heartbeats()
            order = sorted(heartbeats)
            pipe = self._clients.get().pipeline(transaction=False)
            for iid in order:
                pipe.hlen(self._k_conns(iid))
                pipe.hkeys(self._k_iusers(iid))
            results = await pipe.execute()
        except REDIS_ERRORS:
            return self._local_stats()
        alive = self._alive(heartbeats)
        instances: list[dict[str, Any]] = []
        users: set[str] = set()
        total = 0
        for index, iid in enumerate(order):
            count = int(results[2 * index])
            status = "alive" if iid in alive else "dead"
            if status == "alive":
                total += count
                users.update(results[2 * index + 1])
            instances.append(
                {
                    "instance_id": iid,
                    "connections": count,
                    "last_heartbeat": utc_from_timestamp(heartbeats[iid] / 1000).isoformat(),
                    "status": status,
                }
            )
        return {"total_connections": total, "unique_users": len(users), "instances": instances}

    async def instance_connection_counts(self) -> dict[str, int] | None:
        try:
            heartbeats = await self._heartbeats()
            alive = sorted(self._alive(heartbeats))
            pipe = self._clients.get().pipeline(transaction=False)
            for iid in alive:
                pipe.hlen(self._k_conns(iid))
            results = await pipe.execute()
        except REDIS_ERRORS:
            return None
        return {iid: int(count) for iid, count in zip(alive, results, strict=True)}

    async def all_instance_counters(self) -> dict[str, dict[str, float]]:
        try:
            order = sorted(await self._heartbeats())
            pipe = self._clients.get().pipeline(transaction=False)
            for iid in order:
                pipe.hgetall(self._k_counters(iid))
            results = await pipe.execute()
        except REDIS_ERRORS:
            return {}
        counters: dict[str, dict[str, float]] = {}
        for iid, raw in zip(order, results, strict=True):
            if raw:
                counters[iid] = {k: _as_float(v) for k, v in raw.items()}
        return counters

    async def check(self, timeout: float) -> bool:  # noqa: ASYNC109 (the health interface)
        return all((await self.check_nodes(timeout)).values())

    async def check_nodes(self, timeout: float) -> dict[str, bool]:  # noqa: ASYNC109
        """Each node the registry depends on, and whether it answered within ``timeout``."""
        try:
            return await self.topology.node_status(self._clients.get(), timeout_seconds=timeout)
        except REDIS_ERRORS:
            return {self.topology.describe(): False}

    async def close(self) -> None:
        await self._clients.aclose_current()


def _as_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        return math.nan
    return number
