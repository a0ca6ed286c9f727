"""A counting WebSocket client for the delivery fault tests and the fault bench.

It behaves as the contract asks a client library to (docs/protocol.md, "Delivery"): it keeps,
per conversation, the highest ``seq`` it holds with nothing missing below it, sends ``resume``
with those positions right after ``connected`` on every (re)connect, and resends a message it
never saw acknowledged with the same ``client_id``. Unlike a library it drops nothing: every
durable event each socket receives is recorded (``SocketRecord.received``) so that
``tests.support.delivery_ledger`` can count, per socket, what was owed, lost, duplicated or
out of order against what the database committed.

One reader task per socket reads continuously, so a socket never stalls because the test is
busy elsewhere; ``stop_reading`` stops it (a client that stops reading: its TCP window fills).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect

from chat.event_types import DURABLE_TYPES, EVENT_CLASSES, EventSchemaError, event_check
from tests.support.frames import Frame, auth_query

_refs = itertools.count(1)


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

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def resume_seconds(self) -> float | None:
        """From the start of the connect attempt to the resume ack."""
        if self.resume_acked_at is None:
            return None
        return self.resume_acked_at - self.attempt_started_at


class SocketClosed(ConnectionError):
    pass


class DeliveryClient:
    """One user's client: one socket at a time, positions kept across reconnects."""

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
        self.position = dict(self.start_positions)
        self._held: dict[str, set[int]] = {c: set() for c in self.conversations}
        self.receive_buffer_bytes = receive_buffer_bytes
        self.sockets: list[SocketRecord] = []
        self.unacked: dict[str, Frame] = {}  # client_id -> message frame not yet acknowledged
        self._connection: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._replies: dict[str, asyncio.Future[Frame]] = {}
        self._closed = asyncio.Event()
        self._progress = asyncio.Event()

    # -- what the client holds ----------------------------------------------------------------

    @property
    def current(self) -> SocketRecord:
        return self.sockets[-1]

    def _hold(self, conversation_id: str, seq: int) -> None:
        position = self.position.get(conversation_id, 0)
        held = self._held.setdefault(conversation_id, set())
        if seq > position:
            held.add(seq)
        while position + 1 in held:
            position += 1
            held.discard(position)
        self.position[conversation_id] = position
        self._progress.set()

    def has_reached(self, last_seq: Mapping[str, int]) -> bool:
        """Whether every conversation's position is at least ``last_seq``."""
        return all(self.position.get(c, 0) >= seq for c, seq in last_seq.items())

    async def wait_reached(self, last_seq: Mapping[str, int], *, within: float) -> None:
        deadline = time.monotonic() + within
        while not self.has_reached(last_seq):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                behind = {
                    c: (self.position.get(c, 0), seq)
                    for c, seq in last_seq.items()
                    if self.position.get(c, 0) < seq
                }
                raise TimeoutError(
                    f"{self.name} still behind after {within}s: "
                    f"{{conversation: (position, committed)}} = {behind}"
                )
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), timeout=min(remaining, 0.2))

    # -- connecting -----------------------------------------------------------------------------

    async def connect(
        self, url: str, *, within: float = 10.0, resume: bool = True, await_ack: bool = True
    ) -> SocketRecord:
        """Open a socket, wait for ``connected``, send ``resume`` (and wait for its ack)."""
        if self._connection is not None:
            await self.close()
        record = SocketRecord(index=len(self.sockets), url=url, attempt_started_at=time.monotonic())
        connection = await self._open(url, within=within)
        try:
            hello = json.loads(await asyncio.wait_for(connection.recv(), timeout=within))
        except BaseException:
            await connection.close()
            raise
        if hello.get("type") != "connected":
            await connection.close()
            raise ConnectionError(f"{self.name}: first frame was not connected: {hello}")
        record.connected_at = time.monotonic()
        record.instance_id = str(hello.get("instance_id", ""))
        self.sockets.append(record)
        self._connection = connection
        self._closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(connection, record))
        if resume:
            ref = f"resume-{next(_refs)}"
            record.positions = dict(self.position)
            reply = self._expect(ref)
            record.resume_sent_at = time.monotonic()
            await connection.send(
                json.dumps({"type": "resume", "ref": ref, "positions": record.positions})
            )
            if await_ack:
                await asyncio.wait_for(reply, timeout=within)
        else:
            record.positions = dict(self.position)
            record.resume_acked_at = record.connected_at
        await self._resend_unacked()
        return record

    async def reconnect(
        self, urls: str | Sequence[str], *, within: float = 15.0, interval: float = 0.2
    ) -> SocketRecord:
        """Retry, as a client library does, until one of ``urls`` takes the socket and acks
        the resume."""
        candidates = [urls] if isinstance(urls, str) else list(urls)
        deadline = time.monotonic() + within
        last_error: BaseException | None = None
        for attempt in itertools.count():
            url = candidates[attempt % len(candidates)]
            try:
                return await self.connect(url, within=min(5.0, within))
            except (OSError, TimeoutError, websockets.WebSocketException, ConnectionError) as exc:
                last_error = exc
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(interval)
        raise TimeoutError(f"{self.name} could not reconnect within {within}s: {last_error!r}")

    async def _open(self, url: str, *, within: float) -> ClientConnection:
        sock = None
        if self.receive_buffer_bytes is not None:
            # A small receive window, set before connecting so the handshake advertises it:
            # a client that stops reading fills it (and the server's send buffer) quickly.
            parts = urlsplit(url)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer_bytes)
            sock.settimeout(within)
            sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
            sock.setblocking(False)
        return await connect(
            url + auth_query(token=self.token),
            open_timeout=within,
            max_size=None,
            max_queue=4 if sock is not None else 1024,
            ping_interval=None,
            proxy=None,  # tests only ever reach 127.0.0.1
            sock=sock,
        )

    # -- reading --------------------------------------------------------------------------------

    async def _read(self, connection: ClientConnection, record: SocketRecord) -> None:
        # Cancelled (``stop_reading``), the socket stays open: only a close marks it closed.
        try:
            async for raw in connection:
                self._take(record, json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        if record.closed_at is None:
            self._mark_closed(connection, record)

    def _take(self, record: SocketRecord, frame: Frame) -> None:
        kind = frame.get("type")
        if kind in EVENT_CLASSES:
            try:
                event_check(frame)
            except EventSchemaError as exc:
                record.schema_errors.append(str(exc))
        if kind in DURABLE_TYPES and "seq" in frame:
            conversation_id = str(frame.get("conversation_id"))
            record.received.append(
                Received(
                    conversation_id=conversation_id,
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
            self._hold(conversation_id, int(frame["seq"]))
            return
        ref = frame.get("ref")
        if ref is not None and ref in self._replies:
            if str(ref).startswith("resume-") and kind == "ack":
                record.resume_acked_at = time.monotonic()
                record.resume_ack = frame
            future = self._replies.pop(ref)
            if not future.done():
                future.set_result(frame)
            return
        if len(record.other_frames) < 1000:
            record.other_frames.append(frame)

    def _mark_closed(self, connection: ClientConnection, record: SocketRecord) -> None:
        record.closed_at = time.monotonic()
        record.close_code = connection.close_code
        for ref, future in list(self._replies.items()):
            if not future.done():
                future.set_exception(SocketClosed(f"{self.name}: socket closed before {ref}"))
        self._replies.clear()
        self._closed.set()

    def _expect(self, ref: str) -> asyncio.Future[Frame]:
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._replies[ref] = future
        return future

    def stop_reading(self) -> None:
        """Stop reading the socket (it stays open): the kernel's buffers fill, then the
        server's."""
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None

    def resume_reading(self) -> None:
        """Read again whatever the socket still holds, up to its close."""
        if self._reader is None and self._connection is not None:
            self._reader = asyncio.create_task(self._read(self._connection, self.current))

    async def wait_closed(self, *, within: float) -> int | None:
        """The close code once the server has closed the current socket."""
        await asyncio.wait_for(self._closed.wait(), timeout=within)
        return self.current.close_code

    # -- sending --------------------------------------------------------------------------------

    async def request(self, frame: Frame, *, within: float = 5.0) -> Frame:
        """Send a client frame with a fresh ``ref``; its ``ack`` or ``error``."""
        if self._connection is None or not self.current.open:
            raise SocketClosed(f"{self.name}: no open socket")
        ref = f"r{next(_refs)}"
        reply = self._expect(ref)
        await self._connection.send(json.dumps({**frame, "ref": ref}))
        return await asyncio.wait_for(reply, timeout=within)

    async def send_message(
        self, conversation_id: str, body: str, *, client_id: str | None = None, within: float = 5.0
    ) -> Frame:
        """Send a ``message`` frame; once acknowledged its seq counts as held (the sender gets
        the ack, not the event). Unacknowledged, it is resent on the next connect."""
        client_id = client_id or uuid.uuid4().hex
        frame = {
            "type": "message",
            "conversation_id": conversation_id,
            "body": body,
            "client_id": client_id,
        }
        self.unacked[client_id] = frame
        reply = await self.request(frame, within=within)
        self._acknowledged(client_id, reply)
        return reply

    def _acknowledged(self, client_id: str, reply: Frame) -> None:
        message = reply.get("message") if reply.get("type") == "ack" else None
        if not isinstance(message, dict) or "seq" not in message:
            return
        self.unacked.pop(client_id, None)
        conversation_id = str(message["conversation_id"])
        seq = int(message["seq"])
        self.current.own.setdefault(conversation_id, set()).add(seq)
        self._hold(conversation_id, seq)

    async def _resend_unacked(self) -> None:
        for client_id, frame in list(self.unacked.items()):
            with contextlib.suppress(SocketClosed, TimeoutError):
                self._acknowledged(client_id, await self.request(frame))

    async def close(self) -> None:
        """Close the current socket from the client's side."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        with contextlib.suppress(Exception):
            await connection.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, timeout=2)
            self._reader = None
        if self.sockets and self.current.closed_at is None:
            self._mark_closed(connection, self.current)


async def clients_close(clients: Iterable[DeliveryClient]) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()
