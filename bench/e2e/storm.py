"""Reconnect storm: SIGKILL the instance holding half the sockets; they all come back.

Run: .venv/bin/python -m bench.e2e.run --storm [--storm-users 4000] [--via-haproxy]

Two instances; user i on instance i mod 2, so every conversation of 2 spans both. Once all
sockets are open and every conversation has a little history, the survivor's sockets send
pings (the survivor's own responsiveness) and messages to their partners on the other
instance at fixed rates; then the other instance is killed with SIGKILL. Each of its
clients, on seeing its socket drop, becomes the project's client package's
(``realtime_client.Client``, an ``Observer`` counting its attempts and feeding every frame,
before the package drops duplicates, to the tally) and reconnects to the survivor as
docs/protocol.md tells clients to: after a random delay up to 1 s, then, when closed with
``1013`` and the reason
``retry_after_ms=N`` (or refused before the handshake with ``503`` and ``X-Retry-After-Ms:
N``), after a random delay in ``[N, 2N)`` ms, and after any other failure with
jittered exponential backoff (the ceiling doubling per failed attempt up to 10 s); then it
sends ``resume`` with the last ``seq`` it saw. Measured: how
long until every client has its resume acknowledged, the survivor's ping round trips
before, during and after, how many connects were shed (1013), and the usual tally: every
message the survivor acknowledged is owed to the partner, replayed or live, exactly once.

``--via-haproxy``: the killed instance's clients come back through the cluster's HAProxy
(deploy/haproxy.cfg), which sends them to the survivor and refuses connects past
``CONNECT_RATE_PER_INSTANCE`` itself; the sockets are first placed on each instance directly,
so that the killed one holds exactly half. ``--overload`` clients connect through it too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import websockets
from realtime_client import Ack, Backoff, Connected, Event, Observer, retry_after_ms
from realtime_client import Client as RClient
from realtime_client.events import Frame
from websockets.asyncio.client import ClientConnection, connect

from bench.e2e.load import OPEN_TIMEOUT_SECONDS, Client, LoadGenerator, accounts_assign, percentiles
from bench.e2e.probes import rss_kib
from bench.e2e.targets import BALANCED_CHECK, BENCH_CHECK, bench_cluster, users_seed

# The package's full-jitter backoff with the storm's figures: a dropped socket comes back
# within a second, a refused attempt's ceiling doubles up to 10 s.
STORM_BACKOFF = Backoff(base_seconds=1.0, cap_seconds=10.0)
TRY_AGAIN_LATER = 1013
REFUSED_BEFORE_HANDSHAKE = 503


@dataclasses.dataclass
class Comeback:
    attempts: int = 0
    shed: int = 0  # closed with 1013, or refused with 503 before the handshake
    failed: int = 0  # refused otherwise (connection refused, timeouts)
    reasons: Counter[str] = dataclasses.field(default_factory=Counter)
    hints_ms: list[int] = dataclasses.field(default_factory=list)  # 1013 retry hints received
    shed_answer_ms: list[float] = dataclasses.field(default_factory=list)  # attempt to 1013
    answer_ms: list[float] = dataclasses.field(default_factory=list)  # attempt to any answer
    connected_after: float | None = None  # seconds after the kill
    resumed_after: float | None = None
    recovered: bool | None = None


class StormObserver(Observer):
    """Counts a package client's attempts and their answers into ``record``, and hands every
    frame, before the package drops duplicates, to the load generator's tally."""

    def __init__(self, gen: LoadGenerator, client: Client, since: float, record: Comeback):
        self.gen, self.client, self.since, self.record = gen, client, since, record
        self.started = 0.0
        self.open = False  # a ``connected`` arrived on the current socket
        self.back = asyncio.Event()  # a resume acknowledged since this observer took over
        self.opening: ClientConnection | None = None  # the attempt's socket, from the opener

    def answered(self) -> float:
        ms = (time.monotonic() - self.started) * 1000
        self.record.answer_ms.append(ms)
        return ms

    def attempt_failed(self, exc: BaseException) -> None:
        """An attempt that ended before the socket opened (from the opener)."""
        ms = self.answered()
        if (
            isinstance(exc, websockets.InvalidStatus)
            and exc.response.status_code == REFUSED_BEFORE_HANDSHAKE
            and (hint := exc.response.headers.get("X-Retry-After-Ms", ""))
        ):
            self.record.reasons["http 503"] += 1
            self.record.shed += 1
            self.record.shed_answer_ms.append(ms)
            if (hint_ms := retry_after_ms(f"retry_after_ms={hint}")) is not None:
                self.record.hints_ms.append(hint_ms)
            return
        self.record.reasons[type(exc).__name__] += 1
        self.record.failed += 1

    def connecting(self, url: str) -> None:
        self.record.attempts += 1
        self.started = time.monotonic()

    def connected(self, url: str, hello: Connected) -> None:
        self.answered()
        self.open = True
        # The generator sends its pings and messages on this socket too; their replies reach
        # it through ``frame``, the package ignores refs not its own.
        self.client.ws = self.opening
        self.record.connected_after = time.monotonic() - self.since

    def frame(self, frame: Frame) -> None:
        self.gen._on_frame(self.client, frame)

    def resumed(self, ack: Ack) -> None:
        self.record.resumed_after = time.monotonic() - self.since
        answers = (ack.data.get("conversations") or {}).values()
        self.record.recovered = all(a.get("recovered") for a in answers)
        self.back.set()

    def closed(self, code: int | None, reason: str | None) -> None:
        self.client.ws = None
        if self.open:  # a live socket dropped: what follows is the next attempt
            self.open = False
            return
        ms = self.answered()
        self.record.reasons[f"close {code or 0}"] += 1
        if code == TRY_AGAIN_LATER:
            self.record.shed += 1
            self.record.shed_answer_ms.append(ms)
            if (hint_ms := retry_after_ms(reason)) is not None:
                self.record.hints_ms.append(hint_ms)
        else:
            self.record.failed += 1


def _storm_client(gen: LoadGenerator, client: Client, url: str, observer: StormObserver) -> RClient:
    """The package's client for ``client``'s account on ``url``, resuming from what its raw
    socket saw; its sockets are opened as the generator's are (no proxy, no size limit)."""

    async def opener(target: str, open_timeout: float) -> ClientConnection:
        try:
            ws = await connect(
                target, open_timeout=open_timeout, max_size=None, ping_interval=None, proxy=None
            )
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            # The package's observer sees no refused attempt: counted here, where it is seen.
            if isinstance(rc.observer, StormObserver):
                rc.observer.attempt_failed(exc)
            raise
        if isinstance(rc.observer, StormObserver):
            rc.observer.opening = ws
        return ws

    def ignore(event: Event) -> None:
        """Everything was counted off the wire by the observer."""

    rc = RClient(
        url,
        token=client.account.token,
        positions=client.positions,
        observer=observer,
        backoff=STORM_BACKOFF,
        open_timeout=OPEN_TIMEOUT_SECONDS,
        gap_timeout=None,  # no REST to fill gaps from: a gap is the tally's to count as lost
        use_proxy=False,
        opener=opener,
        on_event=ignore,
    )
    return rc


async def _come_back(
    gen: LoadGenerator,
    client: Client,
    url: str,
    since: float,
    record: Comeback,
    packaged: dict[int, RClient],
) -> None:
    """``client`` back on ``url`` as the package brings it back (the package's client kept in
    ``packaged``); returns once its resume is acknowledged. A client already the package's
    comes back by itself: it is only counted anew (``_recount``, before its socket drops)."""
    rc = packaged.get(client.index)
    if rc is None:
        if client.reader is not None:
            await asyncio.gather(client.reader, return_exceptions=True)
        client.ws = None
        client.account = dataclasses.replace(client.account, url=url)
        observer = StormObserver(gen, client, since, record)
        rc = packaged[client.index] = _storm_client(gen, client, url, observer)
        # A dropped socket's first comeback after the package's first backoff draw.
        await asyncio.sleep(STORM_BACKOFF.full_jitter(0, random.random))
        await rc.start()
    assert isinstance(rc.observer, StormObserver)
    await rc.observer.back.wait()


def _recount(
    gen: LoadGenerator, client: Client, url: str, since: float, record: Comeback, rc: RClient
) -> None:
    """A package client's next comebacks go to ``url``, counted into ``record``."""
    client.account = dataclasses.replace(client.account, url=url)
    observer = StormObserver(gen, client, since, record)
    if isinstance(rc.observer, StormObserver):  # its open socket's drop is no attempt
        observer.open, observer.opening = rc.observer.open, rc.observer.opening
    rc.observer = observer
    rc.urls = [url]


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


PINGER_SOCKETS = 20


async def _pinger_start(
    survivors: list[Client], url: str, rate: float, workdir: Path
) -> asyncio.subprocess.Process:
    """``bench.e2e.pinger`` on sockets of its own (20 of the survivor's users), once ready."""
    tokens = workdir / "pinger-tokens.txt"
    tokens.write_text("\n".join(c.account.token for c in survivors[:PINGER_SOCKETS]))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.e2e.pinger", url, str(tokens), str(rate),
        str(workdir / "pinger-samples.json"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(60):
        line = await process.stdout.readline()
    if line.strip() != b"ready":
        raise RuntimeError(f"the pinger did not start: {line!r}")
    return process


async def _pinger_stop(
    process: asyncio.subprocess.Process, workdir: Path
) -> list[tuple[float, float]]:
    assert process.stdin is not None
    process.stdin.close()
    async with asyncio.timeout(60):
        await process.wait()
    return [(at, ms) for at, ms in json.loads((workdir / "pinger-samples.json").read_text())]


# A refusal HAProxy answered itself (deploy/haproxy.cfg's log-format): no server, status 503;
# the fifth timer is %Ta, the time it was active on the request.
_BALANCER_REFUSAL = re.compile(r" \S+/<NOSRV> -?\d+/-?\d+/-?\d+/-?\d+/(\d+) 503 ")


def _balancer_refusals(cluster: Any) -> dict[str, Any] | None:
    """The balancer's own refusals as HAProxy timed them (its log): how long it took to answer
    each, free of the bench process's lag, which is in every time the bench measures itself
    when it drives thousands of clients at once."""
    if cluster.haproxy is None:
        return None
    text = cluster.haproxy.log_path.read_text(errors="replace")
    times = [float(m.group(1)) for m in _BALANCER_REFUSAL.finditer(text)]
    return {"refusals": len(times), "answer_ms": percentiles(times)}


def _window(samples: list[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    values = [ms for at, ms in samples if start <= at < end]
    return {"pings": len(values), **percentiles(values)}


POOL_EXHAUSTED = ("MaxConnectionsError", "keeping local truth")


async def _close_all(gen: LoadGenerator, packaged: dict[int, RClient]) -> None:
    # The package's clients first: each stops at once, so none reconnects when the generator
    # closes the socket it shares.
    await asyncio.gather(*(rc.close() for rc in packaged.values()), gen.close())


async def _mass_close(
    gen: LoadGenerator, cluster: Any, instance: Any, packaged: dict[int, RClient]
) -> dict[str, Any]:
    """Every socket closed at once: how long until the survivor's registry entries are gone,
    whether its Redis pool ran out meanwhile (its log), and its health after."""
    import redis.asyncio as aioredis

    from connections.registry_redis import KEY_PREFIX
    from connections.topology import instance_tag
    from scripts.procs import http_get

    log_before = instance.log_path.read_text(errors="replace")
    client = aioredis.Redis.from_url(cluster.redis.url)
    # A PROCESSES > 1 instance's processes are the instances <id>-p<k>.
    keys = [f"{KEY_PREFIX}{instance_tag(instance.instance_id)}:conns"]
    keys += [
        key.decode()
        async for key in client.scan_iter(
            match=f"{KEY_PREFIX}{{i:{instance.instance_id}-p*}}:conns"
        )
    ]

    async def entries() -> int:
        return sum([int(await client.hlen(key)) for key in keys])

    try:
        before = await entries()
        closed_at = time.monotonic()
        await _close_all(gen, packaged)
        left = before
        while left and time.monotonic() - closed_at < 30:
            await asyncio.sleep(0.05)
            left = await entries()
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
    argv += os.environ.get("PY_SPY_ARGS", "").split()  # e.g. --gil: the loop's own time only
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
        check=BALANCED_CHECK if args.via_haproxy else BENCH_CHECK,
    )
    try:
        seeded = users_seed(cluster, users=args.storm_users, size=2)
        victim, survivor = cluster.instances
        comeback_url = cluster.ws_url if args.via_haproxy else survivor.ws_url
        gen = LoadGenerator(accounts_assign(seeded, [victim.ws_url, survivor.ws_url]))
        connect_stats = await gen.connect()
        # Connects the instances shed (1013) come back as clients do, after their hint: as
        # the package's clients. The generator sends on their sockets too; the package does
        # not see those frames' acks, so such a client must not resume (its positions would
        # lag its own messages): none on the survivor does, and the victim's only receive.
        refused = [c for c in gen.clients if c.ws is None]
        packaged: dict[int, RClient] = {}
        opened_at = time.monotonic()
        await asyncio.gather(
            *(_come_back(gen, c, c.account.url, opened_at, Comeback(), packaged) for c in refused)
        )
        opened = sum(1 for c in gen.clients if c.ws is not None)
        victims = [c for c in gen.clients if c.account.url == victim.ws_url and c.ws]
        survivors = [c for c in gen.clients if c.account.url == survivor.ws_url and c.ws]
        # A little history in every conversation, so each resume has a position to give.
        for client in survivors:
            await gen.send(client, "message")
        await gen.settle(within=30)
        rss_before = rss_kib(survivor.pid)

        pinger = await _pinger_start(survivors, survivor.ws_url, args.storm_ping_rate, workdir)
        stop = asyncio.Event()
        pings = asyncio.create_task(_pings(gen, survivors, args.storm_ping_rate, stop))
        sent = asyncio.create_task(_messages(gen, survivors, args.storm_message_rate, stop))
        await asyncio.sleep(args.storm_calm)
        records = {c.index: Comeback() for c in victims}
        spy = _profile(args, survivor.pid)
        killed_at = time.monotonic()
        for c in victims:
            if c.index in packaged:
                _recount(gen, c, comeback_url, killed_at, records[c.index], packaged[c.index])
        os.kill(victim.pid, signal.SIGKILL)
        comebacks = [
            asyncio.create_task(
                _come_back(gen, c, comeback_url, killed_at, records[c.index], packaged)
            )
            for c in victims
        ]
        _, not_done = await asyncio.wait(comebacks, timeout=args.storm_deadline)
        back_at = time.monotonic()
        await asyncio.sleep(args.storm_calm)
        stop.set()
        samples = await pings
        own_samples = await _pinger_stop(pinger, workdir)
        messages_sent = await sent
        for task in not_done:
            task.cancel()
        await asyncio.gather(*not_done, return_exceptions=True)
        tally = (await gen.settle(within=30)).as_dict()
        if spy is not None:
            spy.wait(timeout=60)
        resumed = [r.resumed_after for r in records.values() if r.resumed_after is not None]
        result = {
            "via_haproxy": args.via_haproxy,
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
            # The same pings from a process of its own (bench/e2e/pinger.py): the survivor's
            # answer time without the storm's own process's lag.
            "survivor_ping_ms_own_process": {
                "before": _window(own_samples, killed_at - args.storm_calm, killed_at),
                "during": _window(own_samples, killed_at, back_at),
                "after": _window(own_samples, back_at, back_at + args.storm_calm),
            },
            "survivor_rss_kib": {"before": rss_before, "after": rss_kib(survivor.pid)},
            "integrity": tally,
            "errors": dict(gen.errors),
            "balancer_refusals": _balancer_refusals(cluster),
        }
        try:
            result["mass_close"] = await _mass_close(gen, cluster, survivor, packaged)
        except Exception as exc:  # the storm's results are worth keeping whatever this does
            result["mass_close_error"] = repr(exc)
            await _close_all(gen, packaged)
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
            url = cluster.ws_url if args.via_haproxy else instance.ws_url
            gen = LoadGenerator(accounts_assign(seeded, [url]))
            records = {c.index: Comeback() for c in gen.clients}
            packaged: dict[int, RClient] = {}
            rss_before = rss_kib(instance.pid)
            started = time.monotonic()
            comers = [
                asyncio.create_task(_come_back(gen, c, url, started, records[c.index], packaged))
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
                "via_haproxy": args.via_haproxy,
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
                "balancer_refusals": _balancer_refusals(cluster),
                "rss_kib": {"before": rss_before, "after": rss_kib(instance.pid)},
                "errors": dict(gen.errors),
            }
            await _close_all(gen, packaged)
        finally:
            cluster.stop()
    return results
