"""The load generator: many authenticated sockets, conversations, messages and typing.

See docs/benchmarks.md ("End-to-end"). One asyncio process holds every socket (loopback
only). Each message body carries its sender's nonce and send time, so a receiver measures the
end-to-end latency (sender's ``time.time()`` to the receiver's) and every delivery is
accounted for: a message acknowledged by the server must reach every socket of every other
participant exactly once. Losses and duplicates are counted by message id, by nonce and by
``event_id``; typing events, which carry no body, are counted per (receiver, sender).

Two ways to offer load: ``run_open`` sends at fixed rates whatever the server does (latency
vs rate), ``run_closed`` keeps one frame in flight per socket (the saturated delivery rate).
Against the bare echo server (``echo=True``) a frame's echo plays the role of its delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

OPEN_TIMEOUT_SECONDS = 30.0
# The scheduler of open-loop traffic wakes this often and sends what has come due.
TICK_SECONDS = 0.005


@dataclass(frozen=True)
class Account:
    user_id: str
    token: str
    conversation_id: str
    url: str  # the instance's ws:// URL (or HAProxy's)


def accounts_assign(seeded: dict[str, Any], urls: list[str]) -> list[Account]:
    """User i on ``urls[i % len(urls)]``: consecutive users of a conversation land on
    different instances, so with 2 instances every delivery of a 2-user conversation crosses
    Redis."""
    conversation_of = {
        uid: conv["id"] for conv in seeded["conversations"] for uid in conv["participant_ids"]
    }
    return [
        Account(
            user_id=user["id"],
            token=user["token"],
            conversation_id=conversation_of[user["id"]],
            url=urls[index % len(urls)],
        )
        for index, user in enumerate(seeded["users"])
    ]


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], 2)}


@dataclass
class ConnectStats:
    sockets: int
    failed: int
    seconds: float
    per_second: float
    latency_ms: dict[str, float | None]


@dataclass
class PhaseStats:
    mode: str
    seconds: float
    offered_per_s: float
    sent: int
    acked: int
    errors: dict[str, int]
    delivered: int
    delivered_per_s: float
    latency_ms: dict[str, float | None]  # messages (or echoes)
    typing_latency_ms: dict[str, float | None]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Integrity:
    expected: int  # deliveries owed for acknowledged frames
    lost: int
    duplicate_events: int  # the same event_id twice on one socket
    duplicate_messages: int  # the same message id (or echo nonce) twice on one socket
    unacked: int  # frames sent that got neither ack nor error

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Client:
    index: int
    account: Account
    ws: ClientConnection | None = None
    reader: asyncio.Task[None] | None = None
    event_ids: set[str] = field(default_factory=set)
    message_ids: set[str] = field(default_factory=set)
    waiter: asyncio.Future[None] | None = None
    # The last durable seq seen per conversation: what a reconnect resumes from.
    positions: dict[str, int] = field(default_factory=dict)


class LoadGenerator:
    def __init__(self, accounts: list[Account], *, echo: bool = False) -> None:
        self.echo = echo
        self.clients = [Client(index=i, account=a) for i, a in enumerate(accounts)]
        self.members: dict[str, list[int]] = defaultdict(list)
        for client in self.clients:
            self.members[client.account.conversation_id].append(client.index)
        self._refs = itertools.count(1)
        self._pending: dict[str, tuple[str, int, str]] = {}  # ref -> (kind, sender, nonce)
        self.errors: Counter[str] = Counter()
        self.acked_messages: dict[str, int] = {}  # nonce -> sender index
        self.message_receivers: dict[str, set[int]] = defaultdict(set)
        self.typing_sent: Counter[int] = Counter()  # sender index -> acknowledged frames
        self.typing_received: Counter[tuple[int, str]] = Counter()  # (receiver, sender uid)
        # A typing event has no body to carry a send time; one sender's events reach a
        # receiver in order, so the receiver's nth event from a sender is its nth frame.
        self.typing_sent_at: dict[str, list[float]] = defaultdict(list)  # sender uid -> times
        self.typing_latencies_ms: list[float] = []
        self.duplicate_events = 0
        self.duplicate_messages = 0
        self.delivered = 0
        self.latencies_ms: list[float] = []
        self.closed_unexpectedly = 0
        self._requests: dict[str, asyncio.Future[dict[str, Any]]] = {}  # ref -> reply
        self.last_connect_times_ms: list[float] = []  # the last ``connect``'s handshakes

    # -- sockets ----------------------------------------------------------------------------

    async def connect(
        self, *, concurrency: int = 100, clients: list[Client] | None = None
    ) -> ConnectStats:
        """Open the sockets (``concurrency`` handshakes at a time); done at ``connected``."""
        todo = clients if clients is not None else [c for c in self.clients if c.ws is None]
        gate = asyncio.Semaphore(concurrency)
        times: list[float] = []
        failed = 0

        async def one(client: Client) -> None:
            nonlocal failed
            async with gate:
                started = time.perf_counter()
                try:
                    await self._open(client)
                except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                    failed += 1
                    code = getattr(getattr(exc, "rcvd", None), "code", None) or getattr(
                        getattr(exc, "response", None), "status_code", None
                    )
                    self.errors[f"connect_{code or type(exc).__name__}"] += 1
                    return
                times.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(one(c) for c in todo))
        seconds = time.perf_counter() - started
        self.last_connect_times_ms = times
        return ConnectStats(
            sockets=len(todo) - failed,
            failed=failed,
            seconds=round(seconds, 3),
            per_second=round((len(todo) - failed) / seconds, 1) if seconds else 0.0,
            latency_ms=percentiles(times),
        )

    async def open_upto(self, target: int) -> ConnectStats:
        """Open the sockets of clients ``[0, target)`` that are not open yet (a ramp's step)."""
        return await self.connect(clients=[c for c in self.clients[:target] if c.ws is None])

    async def _open(self, client: Client) -> None:
        url = client.account.url
        if not self.echo:
            url = f"{url}?token={client.account.token}"
        ws = await connect(
            url,
            open_timeout=OPEN_TIMEOUT_SECONDS,
            max_size=None,
            ping_interval=None,
            proxy=None,  # loopback only, whatever the environment says
        )
        if not self.echo:
            async with asyncio.timeout(OPEN_TIMEOUT_SECONDS):
                first = json.loads(await ws.recv())
            if first.get("type") != "connected":
                await ws.close()
                raise websockets.InvalidHandshake(f"first frame was {first!r}")
        client.ws = ws
        client.reader = asyncio.create_task(self._read(client))

    async def close(self, clients: list[Client] | None = None) -> None:
        todo = clients if clients is not None else self.clients
        await asyncio.gather(*(self._close_one(c) for c in todo))

    async def _close_one(self, client: Client) -> None:
        ws, client.ws = client.ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if client.reader is not None:
            with contextlib.suppress(BaseException):
                async with asyncio.timeout(5):
                    await client.reader
            client.reader = None

    @property
    def open_sockets(self) -> int:
        return sum(1 for c in self.clients if c.ws is not None)

    # -- what arrives -----------------------------------------------------------------------

    async def _read(self, client: Client) -> None:
        # The raw reader, not the client package's: the package cannot stand in front of the
        # bare echo server (it waits for ``connected`` and sends ``resume``), so the
        # generator's own ceiling could not be measured with it, and its reader costs 15.7 us
        # a message frame against this one's 6.0 us, about 7 % of the generator's ceiling,
        # which the throughput phases would charge to the server. The reconnect storm's
        # clients are the package's (bench/e2e/storm.py); docs/benchmarks.md, "Storm clients".
        assert client.ws is not None
        try:
            async for raw in client.ws:
                self._on_frame(client, json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        if client.ws is not None:  # not closed by us
            self.closed_unexpectedly += 1

    def _on_frame(self, client: Client, frame: dict[str, Any]) -> None:
        now = time.time()
        if self.echo:
            self._on_echo(client, frame, now)
            return
        kind = frame.get("type")
        ref = frame.get("ref")
        if isinstance(ref, str) and ref in self._requests:
            future = self._requests.pop(ref)
            if not future.done():
                future.set_result(frame)
            return
        seq, conversation = frame.get("seq"), frame.get("conversation_id")
        if isinstance(seq, int) and isinstance(conversation, str) and kind != "ack":
            client.positions[conversation] = max(client.positions.get(conversation, 0), seq)
        event_id = frame.get("event_id")
        if isinstance(event_id, str):
            if event_id in client.event_ids:
                self.duplicate_events += 1
                return
            client.event_ids.add(event_id)
        if kind == "message":
            message = frame["message"]
            if message["id"] in client.message_ids:
                self.duplicate_messages += 1
                return
            client.message_ids.add(message["id"])
            nonce, _, sent_at = str(message.get("body", "")).partition(" ")
            if nonce in self.message_receivers and client.index in self.message_receivers[nonce]:
                self.duplicate_messages += 1
                return
            self.message_receivers[nonce].add(client.index)
            self.delivered += 1
            with contextlib.suppress(ValueError):
                self.latencies_ms.append((now - float(sent_at)) * 1000)
        elif kind == "typing" and frame.get("is_typing") is True:
            sender = str(frame.get("user_id"))
            nth = self.typing_received[(client.index, sender)]
            self.typing_received[(client.index, sender)] += 1
            self.delivered += 1
            times = self.typing_sent_at[sender]
            if nth < len(times):
                self.typing_latencies_ms.append((now - times[nth]) * 1000)
        elif kind in {"ack", "error"}:
            self._on_reply(client, frame)

    def _on_echo(self, client: Client, frame: dict[str, Any], now: float) -> None:
        nonce = str(frame.get("nonce"))
        if nonce in client.message_ids:
            self.duplicate_messages += 1
            return
        client.message_ids.add(nonce)
        self._pending.pop(str(frame.get("ref")), None)
        self.acked_messages[nonce] = client.index
        self.message_receivers[nonce].add(client.index)
        self.delivered += 1
        self.latencies_ms.append((now - float(frame["t"])) * 1000)
        self._wake(client)

    def _on_reply(self, client: Client, frame: dict[str, Any]) -> None:
        pending = self._pending.pop(str(frame.get("ref")), None)
        if frame["type"] == "error":
            self.errors[str(frame.get("code"))] += 1
        elif pending is not None:
            kind, sender, nonce = pending
            if kind == "message":
                self.acked_messages[nonce] = sender
            else:
                self.typing_sent[sender] += 1
        self._wake(client)

    @staticmethod
    def _wake(client: Client) -> None:
        if client.waiter is not None and not client.waiter.done():
            client.waiter.set_result(None)

    # -- what is sent -----------------------------------------------------------------------

    async def request(
        self, client: Client, frame: dict[str, Any], *, within: float = 30.0
    ) -> dict[str, Any]:
        """Send ``frame`` with a fresh ``ref`` and return the server's reply to it."""
        assert client.ws is not None
        ref = f"q{next(self._refs)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._requests[ref] = future
        try:
            await client.ws.send(json.dumps({**frame, "ref": ref}))
            async with asyncio.timeout(within):
                return await future
        finally:
            self._requests.pop(ref, None)

    async def send(self, client: Client, kind: str) -> None:
        """One frame: ``message`` (body = nonce and send time), ``typing``, or an echo."""
        if client.ws is None:
            return
        ref = f"r{next(self._refs)}"
        nonce = f"{client.index}-{ref}"
        sent_at = time.time()
        if self.echo:
            frame: dict[str, Any] = {"ref": ref, "nonce": nonce, "t": sent_at}
        elif kind == "message":
            frame = {
                "type": "message",
                "ref": ref,
                "conversation_id": client.account.conversation_id,
                "body": f"{nonce} {sent_at:.6f}",
            }
        else:
            self.typing_sent_at[client.account.user_id].append(sent_at)
            frame = {
                "type": "typing",
                "ref": ref,
                "conversation_id": client.account.conversation_id,
                "is_typing": True,
            }
        self._pending[ref] = (kind, client.index, nonce)
        try:
            await client.ws.send(json.dumps(frame))
        except websockets.ConnectionClosed:
            self._pending.pop(ref, None)
            self.errors["send_on_closed"] += 1

    def _senders(self) -> list[Client]:
        # Only sockets with someone to talk to: a conversation of one has no receiver.
        return [
            c
            for c in self.clients
            if c.ws is not None and len(self.members[c.account.conversation_id]) > 1
        ]

    async def run_open(
        self, *, message_rate: float, typing_rate: float, seconds: float
    ) -> PhaseStats:
        """Send messages and typing at fixed total rates (frames/s), round-robin over senders."""
        senders = self._senders()
        turn = itertools.cycle(senders)
        mark = self._mark()
        started = time.monotonic()
        sent = {"message": 0, "typing": 0}
        rates = {"message": message_rate, "typing": typing_rate}
        while (elapsed := time.monotonic() - started) < seconds:
            for kind, rate in rates.items():
                due = int(elapsed * rate) - sent[kind]
                for _ in range(due):
                    await self.send(next(turn), kind)
                sent[kind] += max(0, due)
            await asyncio.sleep(TICK_SECONDS)
        return self._phase("open", mark, offered=message_rate + typing_rate)

    async def run_closed(
        self, *, kind: str, seconds: float, senders: int | None = None
    ) -> PhaseStats:
        """Each sender keeps one frame in flight (the next goes at its ack): full speed."""
        chosen = self._senders()[:senders] if senders else self._senders()
        mark = self._mark()
        deadline = time.monotonic() + seconds

        async def loop(client: Client) -> None:
            loop_ = asyncio.get_running_loop()
            while time.monotonic() < deadline and client.ws is not None:
                client.waiter = loop_.create_future()
                await self.send(client, kind)
                try:
                    async with asyncio.timeout(10):
                        await client.waiter
                except TimeoutError:
                    self.errors["ack_timeout"] += 1
            client.waiter = None

        await asyncio.gather(*(loop(c) for c in chosen))
        return self._phase(f"closed-{kind}", mark, offered=0.0)

    def _mark(self) -> tuple[float, int, int, int, int, Counter[str]]:
        return (
            time.monotonic(),
            self.delivered,
            len(self.latencies_ms),
            len(self.typing_latencies_ms),
            next(self._refs),
            Counter(self.errors),
        )

    def _phase(
        self, mode: str, mark: tuple[float, int, int, int, int, Counter[str]], *, offered: float
    ) -> PhaseStats:
        started, delivered, latency_from, typing_from, ref_from, errors = mark
        seconds = time.monotonic() - started
        sent = next(self._refs) - ref_from - 1
        outstanding = sum(1 for ref in self._pending if int(ref[1:]) > ref_from)
        count = self.delivered - delivered
        return PhaseStats(
            mode=mode,
            seconds=round(seconds, 2),
            offered_per_s=offered,
            sent=sent,
            acked=sent - outstanding,
            errors=dict(self.errors - errors),
            delivered=count,
            delivered_per_s=round(count / seconds, 1),
            latency_ms=percentiles(self.latencies_ms[latency_from:]),
            typing_latency_ms=percentiles(self.typing_latencies_ms[typing_from:]),
        )

    # -- accounting -------------------------------------------------------------------------

    def integrity(self) -> Integrity:
        expected = lost = 0
        for nonce, sender in self.acked_messages.items():
            owed = self._receivers_of(sender)
            expected += len(owed)
            lost += len(owed - self.message_receivers.get(nonce, set()))
        for sender, count in self.typing_sent.items():
            uid = self.clients[sender].account.user_id
            for receiver in self._receivers_of(sender):
                expected += count
                lost += max(0, count - self.typing_received[(receiver, uid)])
        return Integrity(
            expected=expected,
            lost=lost,
            duplicate_events=self.duplicate_events,
            duplicate_messages=self.duplicate_messages,
            unacked=len(self._pending),
        )

    def _receivers_of(self, sender: int) -> set[int]:
        if self.echo:
            return {sender}
        conversation = self.clients[sender].account.conversation_id
        return {i for i in self.members[conversation] if i != sender}

    async def settle(self, *, within: float = 15.0) -> Integrity:
        """Wait (polling, bounded) until every reply and owed delivery is in; the tally."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            tally = self.integrity()
            if tally.lost == 0 and tally.unacked == 0:
                return tally
            await asyncio.sleep(0.05)
        return self.integrity()
