"""A counting client for the delivery fault tests and the fault bench.

The client is the project's own package (``realtime_client``, clients/python/): it resumes on
every connect, orders by ``seq``, keeps the outbox and reconnects by itself, as any service
using it would. This module only watches the wire through the package's ``Observer``: every
frame each socket receives is recorded (``SocketRecord.received``), before the package drops a
duplicate, so that ``tests.support.delivery_ledger`` can count, per socket, what was owed,
lost, duplicated or out of order against what the database committed.

The package's REST safety net for gaps is off here (``gap_timeout=None``): what is judged is
what the server delivered on its sockets. ``stop_reading`` makes the app stop taking events:
the package stops reading and the socket's TCP window fills, as for any slow app.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from realtime_client import (
    Ack,
    Backoff,
    Client,
    Connected,
    Event,
    Observer,
    RealtimeError,
    ServerError,
)
from websockets.asyncio.client import ClientConnection, connect

from chat.event_types import DURABLE_TYPES, EVENT_CLASSES, EventSchemaError, event_check
from tests.support.frames import Frame


@dataclass(frozen=True)
class Received:
    """One durable event as one socket received it."""

    conversation_id: str
    seq: int
    event_id: str
    type: str
    at: float  # time.monotonic()
    # Before the resume ack, a live event may come ahead of older replayed ones: the contract
    # lets those be in any order ("clients order by seq"); everything after must be in order.
    before_resume_ack: bool
    frame: Frame


@dataclass
class SocketRecord:
    """Everything one socket (one connection, from ``connected`` to its close) saw."""

    index: int
    url: str
    attempt_started_at: float  # when the successful connect attempt began
    instance_id: str = ""
    connected_at: float | None = None
    positions: dict[str, int] = field(default_factory=dict)  # sent in ``resume``
    resume_sent_at: float | None = None
    resume_acked_at: float | None = None
    resume_ack: Frame | None = None
    received: list[Received] = field(default_factory=list)
    # Seqs of this socket's own acknowledged sends: the socket gets the ack, not the event.
    own: dict[str, set[int]] = field(default_factory=dict)
    other_frames: list[Frame] = field(default_factory=list)
    # Every event is checked against its one typed definition (chat/event_types.py).
    schema_errors: list[str] = field(default_factory=list)
    closed_at: float | None = None
    close_code: int | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def resume_seconds(self) -> float | None:
        """From the start of the connect attempt to the resume ack."""
        if self.resume_acked_at is None:
            return None
        return self.resume_acked_at - self.attempt_started_at


class _Recorder(Observer):
    """Writes what the package sees on the wire into the owner's ``SocketRecord``s."""

    def __init__(self, owner: DeliveryClient) -> None:
        self.owner = owner
        self.url = ""
        self.attempt_started_at = 0.0
        self.record: SocketRecord | None = None

    def connecting(self, url: str) -> None:
        self.url, self.attempt_started_at = url, time.monotonic()

    def connected(self, url: str, hello: Connected) -> None:
        self.record = SocketRecord(
            index=len(self.owner.sockets),
            url=url,
            attempt_started_at=self.attempt_started_at,
            instance_id=hello.instance_id,
            connected_at=time.monotonic(),
        )
        self.owner.sockets.append(self.record)
        self.owner.progress()

    def resume_sent(self, positions: Mapping[str, int]) -> None:
        if self.record is not None:
            self.record.positions = dict(positions)
            self.record.resume_sent_at = time.monotonic()

    def frame(self, frame: Frame) -> None:
        record = self.record
        if record is None:
            return
        kind = frame.get("type")
        if kind in EVENT_CLASSES:
            try:
                event_check(frame)
            except EventSchemaError as exc:
                record.schema_errors.append(str(exc))
        if kind in DURABLE_TYPES and "seq" in frame:
            record.received.append(
                Received(
                    conversation_id=str(frame.get("conversation_id")),
                    seq=int(frame["seq"]),
                    event_id=str(frame.get("event_id")),
                    type=str(kind),
                    at=time.monotonic(),
                    before_resume_ack=(
                        record.resume_sent_at is not None and record.resume_acked_at is None
                    ),
                    frame=frame,
                )
            )
        elif kind not in ("ack", "error", "connected") and len(record.other_frames) < 1000:
            record.other_frames.append(frame)

    def resumed(self, ack: Ack) -> None:
        if self.record is not None:
            self.record.resume_acked_at = time.monotonic()
            self.record.resume_ack = ack.data
        self.owner.progress()

    def acknowledged(self, conversation_id: str, seq: int) -> None:
        if self.record is not None:
            self.record.own.setdefault(conversation_id, set()).add(seq)
        self.owner.progress()

    def closed(self, code: int | None, reason: str | None) -> None:
        record, self.record = self.record, None
        if record is not None:
            record.closed_at = time.monotonic()
            record.close_code = code
            record.closed.set()
        self.owner.progress()


class DeliveryClient:
    """One user's ``realtime_client.Client`` with every socket it opened on record."""

    def __init__(
        self,
        *,
        name: str,
        token: str,
        conversations: Iterable[str],
        positions: Mapping[str, int] | None = None,
        receive_buffer_bytes: int | None = None,
    ) -> None:
        self.name = name
        self.token = token
        self.conversations = list(dict.fromkeys(str(c) for c in conversations))
        start = dict(positions or {})
        self.start_positions = {c: int(start.get(c, 0)) for c in self.conversations}
        self.receive_buffer_bytes = receive_buffer_bytes
        self.sockets: list[SocketRecord] = []
        self.client: Client | None = None
        self._watched: SocketRecord | None = None  # the socket connect/reconnect returned
        self._reading = asyncio.Event()
        self._reading.set()
        self._progress = asyncio.Event()

    # -- what the client holds ----------------------------------------------------------------

    @property
    def current(self) -> SocketRecord:
        return self.sockets[-1]

    @property
    def position(self) -> dict[str, int]:
        held = self.client.positions if self.client is not None else {}
        return {**self.start_positions, **held}

    @property
    def unacked(self) -> int:
        return self.client.pending_messages if self.client is not None else 0

    def progress(self) -> None:
        self._progress.set()

    def has_reached(self, last_seq: Mapping[str, int]) -> bool:
        """Whether every conversation's position is at least ``last_seq``."""
        position = self.position
        return all(position.get(c, 0) >= seq for c, seq in last_seq.items())

    async def wait_reached(self, last_seq: Mapping[str, int], *, within: float) -> None:
        deadline = time.monotonic() + within
        while not self.has_reached(last_seq):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                position = self.position
                behind = {
                    c: (position.get(c, 0), seq)
                    for c, seq in last_seq.items()
                    if position.get(c, 0) < seq
                }
                raise TimeoutError(
                    f"{self.name} still behind after {within}s: "
                    f"{{conversation: (position, committed)}} = {behind}"
                )
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.2)):
                    await self._progress.wait()

    # -- connecting -----------------------------------------------------------------------------

    async def connect(
        self, url: str, *, within: float = 10.0, failover: Sequence[str] = ()
    ) -> SocketRecord:
        """Start the client on ``url`` (then ``failover``, in turn) and wait for its first
        resumed socket."""
        if self.client is not None:
            raise RuntimeError(f"{self.name} is connected already: use reconnect")
        self.client = Client(
            [url, *failover],
            token=self.token,
            positions=self.start_positions,
            on_event=self._take,
            observer=_Recorder(self),
            # The fault tests reconnect often: keep every wait short, the jitter included.
            backoff=Backoff(base_seconds=0.2, cap_seconds=2.0),
            open_timeout=within,
            gap_timeout=None,
            use_proxy=False,  # tests only ever reach 127.0.0.1
            opener=self._open,
        )
        await self.client.start()
        return await self._resumed(within=within)

    async def reconnect(self, urls: str | Sequence[str], *, within: float = 15.0) -> SocketRecord:
        """From now on connect to ``urls`` (started there if never connected); the next socket
        that is open and resumed (the package reconnects by itself)."""
        candidates = [urls] if isinstance(urls, str) else list(urls)
        if self.client is None:
            return await self.connect(candidates[0], within=within, failover=candidates[1:])
        self.client.urls = candidates
        if self.client.state == "closed":
            await self.client.start()  # closed by the test: a new start, positions kept
        return await self._resumed(within=within)

    async def _resumed(self, *, within: float) -> SocketRecord:
        assert self.client is not None
        try:
            await self.client.wait_resumed(within=within)
        except RealtimeError as exc:
            raise TimeoutError(f"{self.name} has no resumed socket within {within}s") from exc
        self._watched = self.current
        return self.current

    async def _open(self, url: str, open_timeout: float) -> ClientConnection:
        sock = None
        if self.receive_buffer_bytes is not None:
            # A small receive window, set before connecting so the handshake advertises it:
            # a client that stops reading fills it (and the server's send buffer) quickly.
            parts = urlsplit(url)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer_bytes)
            sock.settimeout(open_timeout)
            try:
                sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
            except OSError:
                sock.close()
                raise
            sock.setblocking(False)
        return await connect(
            url,
            open_timeout=open_timeout,
            max_size=None,
            max_queue=4 if sock is not None else 1024,
            ping_interval=None,
            proxy=None,
            sock=sock,
        )

    # -- reading --------------------------------------------------------------------------------

    async def _take(self, event: Event) -> None:
        # The app's handler: while it waits, the package reads nothing more.
        await self._reading.wait()
        self.progress()

    def stop_reading(self) -> None:
        """Stop taking events (the socket stays open): the kernel's buffers fill, then the
        server's."""
        self._reading.clear()

    def resume_reading(self) -> None:
        """Take events again: whatever the socket still holds, up to its close."""
        self._reading.set()

    async def wait_closed(self, *, within: float) -> int | None:
        """The close code once the socket ``connect``/``reconnect`` returned has closed."""
        record = self._watched or self.current
        async with asyncio.timeout(within):
            await record.closed.wait()
        return record.close_code

    # -- sending --------------------------------------------------------------------------------

    async def request(self, frame: Frame, *, within: float = 5.0) -> Frame:
        """Send a client frame with a fresh ``ref``; its ``ack`` or ``error``."""
        assert self.client is not None, f"{self.name} never connected"
        try:
            return (await self.client.request(frame, within=within)).data
        except ServerError as exc:
            return {"type": "error", "ref": exc.ref, "code": exc.code, "message": str(exc)}

    async def send_message(
        self, conversation_id: str, body: str, *, client_id: str | None = None, within: float = 15.0
    ) -> Frame:
        """Send a message through the package's outbox; the ``ack`` it settled with."""
        assert self.client is not None, f"{self.name} never connected"
        message = await self.client.send_message(
            conversation_id, body, client_id=client_id, within=within
        )
        return {"type": "ack", "message": dataclasses.asdict(message)}

    async def close(self) -> None:
        """Stop the client for good."""
        self._reading.set()
        if self.client is not None:
            await self.client.close()


async def clients_close(clients: Iterable[DeliveryClient]) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()
