"""Reconnect storm: SIGKILL the instance holding half the sockets; they all come back.

Run: .venv/bin/python -m bench.e2e.run --storm [--storm-users 4000]

Two instances; user i on instance i mod 2, so every conversation of 2 spans both. Once all
sockets are open and every conversation has a little history, the survivor's sockets send
pings (the survivor's own responsiveness) and messages to their partners on the other
instance at fixed rates; then the other instance is killed with SIGKILL. Each of its
clients, on seeing its socket drop, reconnects to the survivor as docs/protocol.md tells
clients to: after a random delay up to 1 s, then, when closed with ``1013`` and the reason
``retry_after_ms=N`` (or refused before the handshake with ``503`` and ``X-Retry-After-Ms:
N``), after a random delay in ``[N, 2N)`` ms, and after any other failure with
jittered exponential backoff (the ceiling doubling per failed attempt up to 10 s); then it
sends ``resume`` with the last ``seq`` it saw. Measured: how
long until every client has its resume acknowledged, the survivor's ping round trips
before, during and after, how many connects were shed (1013), and the usual tally: every
message the survivor acknowledged is owed to the partner, replayed or live, exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import connect

from bench.e2e.load import OPEN_TIMEOUT_SECONDS, Client, LoadGenerator, accounts_assign, percentiles
from bench.e2e.probes import rss_kib
from bench.e2e.targets import bench_cluster, users_seed

BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 10.0
TRY_AGAIN_LATER = 1013
REFUSED_BEFORE_HANDSHAKE = 503
RETRY_REASON_PREFIX = "retry_after_ms="


def retry_hint_seconds(reason: str) -> float | None:
    """The ``[N, 2N)`` draw a ``1013`` close's ``retry_after_ms=N`` asks for; None without one."""
    if not reason.startswith(RETRY_REASON_PREFIX):
        return None
    try:
        hint_ms = int(reason[len(RETRY_REASON_PREFIX) :])
    except ValueError:
        return None
    return random.uniform(hint_ms, 2 * hint_ms) / 1000


@dataclasses.dataclass
class Comeback:
    attempts: int = 0
    shed: int = 0  # closed with 1013
    failed: int = 0  # refused otherwise (connection refused, timeouts)
    reasons: Counter[str] = dataclasses.field(default_factory=Counter)
    hints_ms: list[int] = dataclasses.field(default_factory=list)  # 1013 retry hints received
    shed_answer_ms: list[float] = dataclasses.field(default_factory=list)  # attempt to 1013
    answer_ms: list[float] = dataclasses.field(default_factory=list)  # attempt to any answer
    connected_after: float | None = None  # seconds after the kill
    resumed_after: float | None = None
    recovered: bool | None = None


async def _reopen(
    gen: LoadGenerator, client: Client, url: str, record: Comeback
) -> tuple[int, str] | None:
    """One attempt on ``url``; None once ``connected`` arrived, else the close code (or 0)
    and its reason."""
    started = time.monotonic()
    try:
        ws = await connect(
            f"{url}?token={client.account.token}",
            open_timeout=OPEN_TIMEOUT_SECONDS,
            max_size=None,
            ping_interval=None,
            proxy=None,
        )
    except websockets.InvalidStatus as exc:
        # Refused before the handshake (503 with the same hint as a 1013's reason), or the
        # server gave up on the handshake (Daphne's 403 after its timeout).
        record.answer_ms.append((time.monotonic() - started) * 1000)
        response = exc.response
        hint = response.headers.get("X-Retry-After-Ms", "")
        if response.status_code == REFUSED_BEFORE_HANDSHAKE and hint:
            record.reasons["http 503"] += 1
            record.shed_answer_ms.append(record.answer_ms[-1])
            return TRY_AGAIN_LATER, f"{RETRY_REASON_PREFIX}{hint}"
        record.reasons[type(exc).__name__] += 1
        return 0, ""
    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
        record.reasons[type(exc).__name__] += 1
        record.answer_ms.append((time.monotonic() - started) * 1000)
        return 0, ""
    try:
        first = json.loads(await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT_SECONDS))
    except websockets.ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd is not None else 0
        reason = closed.rcvd.reason if closed.rcvd is not None else ""
        record.reasons[f"close {code}"] += 1
        record.answer_ms.append((time.monotonic() - started) * 1000)
        if code == TRY_AGAIN_LATER:
            record.shed_answer_ms.append(record.answer_ms[-1])
        return code, reason
    except (OSError, TimeoutError) as exc:
        record.reasons[type(exc).__name__] += 1
        await ws.close()
        return 0, ""
    if first.get("type") != "connected":
        record.reasons[f"first frame {first.get('type')}"] += 1
        await ws.close()
        return 0, ""
    record.answer_ms.append((time.monotonic() - started) * 1000)
    client.ws = ws
    client.reader = asyncio.create_task(gen._read(client))
    return None


async def _come_back(
    gen: LoadGenerator, client: Client, url: str, killed_at: float, record: Comeback
) -> None:
    if client.reader is not None:
        await asyncio.gather(client.reader, return_exceptions=True)
    client.ws = None
    client.account = dataclasses.replace(client.account, url=url)
    attempt = 0
    delay = random.uniform(0, BACKOFF_FIRST_SECONDS)
    while True:
        await asyncio.sleep(delay)
        record.attempts += 1
        outcome = await _reopen(gen, client, url, record)
        if outcome is None:
            break
        code, reason = outcome
        attempt += 1
        hinted = retry_hint_seconds(reason) if code == TRY_AGAIN_LATER else None
        if code == TRY_AGAIN_LATER:
            record.shed += 1
        else:
            record.failed += 1
        if hinted is not None:
            record.hints_ms.append(int(reason[len(RETRY_REASON_PREFIX) :]))
            delay = hinted
        else:
            ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2**attempt)
            delay = random.uniform(0, ceiling)
    record.connected_after = time.monotonic() - killed_at
    reply = await gen.request(client, {"type": "resume", "positions": dict(client.positions)})
    record.resumed_after = time.monotonic() - killed_at
    answers = (reply.get("conversations") or {}).values()
    record.recovered = reply.get("type") == "ack" and all(a.get("recovered") for a in answers)


async def _pings(
    gen: LoadGenerator, clients: list[Client], rate: float, stop: asyncio.Event
) -> list[tuple[float, float]]:
    """(send time, round trip ms) of pings at ``rate``/s round-robin over ``clients``."""
    samples: list[tuple[float, float]] = []
    pending: set[asyncio.Task[None]] = set()

    async def one(client: Client) -> None:
        sent = time.monotonic()
        try:
            await gen.request(client, {"type": "ping"}, within=30)
        except (TimeoutError, websockets.WebSocketException):
            return
        samples.append((sent, (time.monotonic() - sent) * 1000))

    started = time.monotonic()
    index = 0
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        while index < due:
            task = asyncio.create_task(one(clients[index % len(clients)]))
            pending.add(task)
            task.add_done_callback(pending.discard)
            index += 1
        await asyncio.sleep(0.005)
    await asyncio.gather(*pending, return_exceptions=True)
    return samples


async def _messages(
    gen: LoadGenerator, clients: list[Client], rate: float, stop: asyncio.Event
) -> int:
    """Messages from the survivor's sockets to their partners at ``rate``/s."""
    started = time.monotonic()
    index = 0
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        while index < due:
            await gen.send(clients[index % len(clients)], "message")
            index += 1
        await asyncio.sleep(0.005)
    return index


def _window(samples: list[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    values = [ms for at, ms in samples if start <= at < end]
    return {"pings": len(values), **percentiles(values)}


POOL_EXHAUSTED = ("MaxConnectionsError", "keeping local truth")


async def _mass_close(gen: LoadGenerator, cluster: Any, instance: Any) -> dict[str, Any]:
    """Every socket closed at once: how long until the survivor's registry entries are gone,
    whether its Redis pool ran out meanwhile (its log), and its health after."""
    import redis.asyncio as aioredis

    from connections.registry_redis import KEY_PREFIX
    from connections.topology import instance_tag
    from scripts.procs import http_get

    key = f"{KEY_PREFIX}{instance_tag(instance.instance_id)}:conns"
    log_before = instance.log_path.read_text(errors="replace")
    client = aioredis.Redis.from_url(cluster.redis.url)
    try:
        before = int(await client.hlen(key))
        closed_at = time.monotonic()
        await gen.close()
        left = before
        while left and time.monotonic() - closed_at < 30:
            await asyncio.sleep(0.05)
            left = int(await client.hlen(key))
        emptied_after = time.monotonic() - closed_at if not left else None
    finally:
        await client.aclose()
    status, body = await asyncio.to_thread(http_get, f"{instance.base_url}/api/health", 5.0)
    log_after = instance.log_path.read_text(errors="replace")[len(log_before) :]
    return {
        "entries_before": before,
        "entries_left": left,
        "emptied_seconds": round(emptied_after, 2) if emptied_after is not None else None,
        "pool_errors_logged": sum(log_after.count(marker) for marker in POOL_EXHAUSTED),
        "health": {"status_code": status, "status": _health_status(body)},
    }


def _health_status(body: Any) -> dict[str, Any] | None:
    """The overall status and each check's, to tell what a ``degraded`` is about."""
    try:
        data = json.loads(body)
        checks = {name: check.get("status") for name, check in data["checks"].items()}
        return {"status": data["status"], "checks": checks}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _profile(args: Any, pid: int) -> subprocess.Popen[bytes] | None:
    """``--profile DIR``: py-spy on the survivor for the first seconds of the storm."""
    if not args.profile:
        return None
    out: Path = args.profile
    out.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    output = str(out / "storm-survivor.txt")
    argv = [spy, "record", "--pid", str(pid), "--duration", "10", "--nonblocking"]
    return subprocess.Popen(
        [*argv, "--format", "raw", "-o", output],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def storm(args: Any, workdir: Path) -> dict[str, Any]:
    cluster = bench_cluster(
        layer="realtime",
        state_dir=workdir / "storm",
        instances=2,
        database_url=args.database_url,
    )
    try:
        seeded = users_seed(cluster, users=args.storm_users, size=2)
        victim, survivor = cluster.instances
        gen = LoadGenerator(accounts_assign(seeded, [victim.ws_url, survivor.ws_url]))
        connect_stats = await gen.connect()
        # Connects the instances shed (1013) come back as clients do, after their hint.
        refused = [c for c in gen.clients if c.ws is None]
        opened_at = time.monotonic()
        await asyncio.gather(
            *(_come_back(gen, c, c.account.url, opened_at, Comeback()) for c in refused)
        )
        opened = sum(1 for c in gen.clients if c.ws is not None)
        victims = [c for c in gen.clients if c.account.url == victim.ws_url and c.ws]
        survivors = [c for c in gen.clients if c.account.url == survivor.ws_url and c.ws]
        # A little history in every conversation, so each resume has a position to give.
        for client in survivors:
            await gen.send(client, "message")
        await gen.settle(within=30)
        rss_before = rss_kib(survivor.pid)

        stop = asyncio.Event()
        pings = asyncio.create_task(_pings(gen, survivors, args.storm_ping_rate, stop))
        sent = asyncio.create_task(_messages(gen, survivors, args.storm_message_rate, stop))
        await asyncio.sleep(args.storm_calm)
        records = {c.index: Comeback() for c in victims}
        spy = _profile(args, survivor.pid)
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        comebacks = [
            asyncio.create_task(_come_back(gen, c, survivor.ws_url, killed_at, records[c.index]))
            for c in victims
        ]
        _, not_done = await asyncio.wait(comebacks, timeout=args.storm_deadline)
        back_at = time.monotonic()
        await asyncio.sleep(args.storm_calm)
        stop.set()
        samples = await pings
        messages_sent = await sent
        for task in not_done:
            task.cancel()
        await asyncio.gather(*not_done, return_exceptions=True)
        tally = (await gen.settle(within=30)).as_dict()
        if spy is not None:
            spy.wait(timeout=60)
        resumed = [r.resumed_after for r in records.values() if r.resumed_after is not None]
        result = {
            "sockets": opened,
            "opened_after_shedding": len(refused),
            "connect": dataclasses.asdict(connect_stats),
            "killed_sockets": len(victims),
            "survivor_sockets": len(survivors),
            "ping_rate": args.storm_ping_rate,
            "message_rate": args.storm_message_rate,
            "messages_sent_during": messages_sent,
            "resumed": len(resumed),
            "resumed_within_10s": sum(1 for s in resumed if s <= 10.0),
            "all_back_seconds": round(max(resumed), 2) if len(resumed) == len(victims) else None,
            "resume_seconds": percentiles(resumed),
            "connect_seconds": percentiles(
                [r.connected_after for r in records.values() if r.connected_after is not None]
            ),
            "recovered_all": all(r.recovered for r in records.values() if r.recovered is not None),
            "attempts": sum(r.attempts for r in records.values()),
            "shed_1013": sum(r.shed for r in records.values()),
            "failed_other": sum(r.failed for r in records.values()),
            "attempt_outcomes": dict(sum((r.reasons for r in records.values()), Counter())),
            "retry_hint_ms": percentiles([float(h) for r in records.values() for h in r.hints_ms]),
            "shed_answer_ms": percentiles([a for r in records.values() for a in r.shed_answer_ms]),
            "resumed_within_5s": sum(1 for s in resumed if s <= 5.0),
            "survivor_ping_ms": {
                "before": _window(samples, killed_at - args.storm_calm, killed_at),
                "during": _window(samples, killed_at, back_at),
                "after": _window(samples, back_at, back_at + args.storm_calm),
            },
            "survivor_rss_kib": {"before": rss_before, "after": rss_kib(survivor.pid)},
            "integrity": tally,
            "errors": dict(gen.errors),
        }
        try:
            result["mass_close"] = await _mass_close(gen, cluster, survivor)
        except Exception as exc:  # the storm's results are worth keeping whatever this does
            result["mass_close_error"] = repr(exc)
            await gen.close()
        return result
    finally:
        cluster.stop()


# Attempts that were not answered in time: Daphne's handshake timeout (403), a connection the
# server dropped before answering, the client's own timeout.
UNANSWERED = ("InvalidStatus", "InvalidMessage", "TimeoutError")


async def overload(args: Any, workdir: Path) -> dict[str, Any]:
    """``--overload 2000 4000 8000``: each count of clients connects to one fresh instance at
    once (within a second), as a crashed instance's clients do, obeying ``1013`` hints.

    Measured per count: completed connects a second (from the first attempt to the last
    ``connected``), how long each attempt waited for its answer, and how many went
    unanswered (a handshake timed out or was dropped). Graceful means every attempt answered
    within a second and the completed rate not falling as the offered count grows.
    """
    results: dict[str, Any] = {}
    for offered in args.overload:
        cluster = bench_cluster(
            layer="realtime",
            state_dir=workdir / f"overload-{offered}",
            instances=1,
            database_url=args.database_url,
        )
        try:
            seeded = users_seed(cluster, users=offered, size=2)
            (instance,) = cluster.instances
            gen = LoadGenerator(accounts_assign(seeded, [instance.ws_url]))
            records = {c.index: Comeback() for c in gen.clients}
            rss_before = rss_kib(instance.pid)
            started = time.monotonic()
            comers = [
                asyncio.create_task(_come_back(gen, c, instance.ws_url, started, records[c.index]))
                for c in gen.clients
            ]
            _, not_done = await asyncio.wait(comers, timeout=args.storm_deadline)
            for task in not_done:
                task.cancel()
            await asyncio.gather(*not_done, return_exceptions=True)
            connected: list[float] = [
                r.connected_after for r in records.values() if r.connected_after is not None
            ]
            answers = [a for r in records.values() for a in r.answer_ms]
            outcomes = sum((r.reasons for r in records.values()), Counter())
            last = max(connected, default=0.0)
            results[str(offered)] = {
                "offered": offered,
                "connected": len(connected),
                "all_connected_seconds": (round(last, 2) if len(connected) == offered else None),
                "completed_per_second": round(len(connected) / last, 1) if last else 0.0,
                "connected_seconds": percentiles(connected),
                "attempts": sum(r.attempts for r in records.values()),
                "shed_1013": sum(r.shed for r in records.values()),
                "failed_other": sum(r.failed for r in records.values()),
                "unanswered": sum(outcomes[name] for name in UNANSWERED),
                "answered_within_1s": sum(1 for a in answers if a <= 1000),
                "answer_ms": percentiles(answers),
                "retry_hint_ms": percentiles(
                    [float(h) for r in records.values() for h in r.hints_ms]
                ),
                "attempt_outcomes": dict(outcomes),
                "rss_kib": {"before": rss_before, "after": rss_kib(instance.pid)},
                "errors": dict(gen.errors),
            }
            await gen.close()
        finally:
            cluster.stop()
    return results
