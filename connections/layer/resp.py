"""A minimal RESP2 connection for the layer's two hot paths; see docs/channel-layer.md.

redis-py parses every reply in Python with per-reply object churn: about 16k pub/sub messages/s
on one core here. The layer needs more on the two connections that carry every event (the
pipelined PUBLISH writer and the SUBSCRIBE reader), so these speak RESP2 directly over an
``asyncio.Protocol``; everything else (health PING, Sentinel discovery) goes through redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

CRLF = b"\r\n"


class RespError(Exception):
    """An error reply (``-ERR ...``) from Redis."""


class RespProtocolError(RuntimeError):
    """The byte stream is not RESP2: the connection cannot be trusted any more."""


def encode_command(*args: bytes) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def parse_replies(buf: bytearray) -> tuple[list[Any], int]:
    """Parse every complete reply at the start of ``buf``; return them and the bytes used.

    Pub/sub pushes are flat arrays of bulk strings and integers, so nested arrays are parsed
    one level deep only (enough for every command the layer sends).
    """
    replies: list[Any] = []
    pos = 0
    size = len(buf)
    find = buf.find
    while pos < size:
        end = find(CRLF, pos)
        if end < 0:
            break
        kind = buf[pos]
        if kind == 42:  # '*' array
            count = int(buf[pos + 1 : end])
            cursor = end + 2
            items: list[Any] = []
            complete = True
            for _ in range(max(count, 0)):
                item_end = find(CRLF, cursor)
                if item_end < 0:
                    complete = False
                    break
                item_kind = buf[cursor]
                if item_kind == 36:  # '$' bulk string
                    length = int(buf[cursor + 1 : item_end])
                    if length < 0:
                        items.append(None)
                        cursor = item_end + 2
                        continue
                    start = item_end + 2
                    if start + length + 2 > size:
                        complete = False
                        break
                    items.append(bytes(buf[start : start + length]))
                    cursor = start + length + 2
                elif item_kind == 58:  # ':' integer
                    items.append(int(buf[cursor + 1 : item_end]))
                    cursor = item_end + 2
                elif item_kind == 43:  # '+' simple string
                    items.append(bytes(buf[cursor + 1 : item_end]))
                    cursor = item_end + 2
                else:
                    raise RespProtocolError(f"unexpected array item type {chr(item_kind)!r}")
            if not complete:
                break
            replies.append(items if count >= 0 else None)
            pos = cursor
        elif kind == 58:  # ':' integer
            replies.append(int(buf[pos + 1 : end]))
            pos = end + 2
        elif kind == 43:  # '+' simple string
            replies.append(bytes(buf[pos + 1 : end]))
            pos = end + 2
        elif kind == 45:  # '-' error
            replies.append(RespError(buf[pos + 1 : end].decode(errors="replace")))
            pos = end + 2
        elif kind == 36:  # '$' bulk string
            length = int(buf[pos + 1 : end])
            if length < 0:
                replies.append(None)
                pos = end + 2
                continue
            start = end + 2
            if start + length + 2 > size:
                break
            replies.append(bytes(buf[start : start + length]))
            pos = start + length + 2
        else:
            raise RespProtocolError(f"unexpected reply type {chr(kind)!r}")
    return replies, pos


class RespConnection(asyncio.Protocol):
    """One socket to Redis. Replies go to awaiting ``request`` calls first, then to ``on_push``.

    ``on_push`` receives every reply nobody awaits: pub/sub messages on the reader, PUBLISH
    counts on the writer. ``on_lost`` is called once when the socket closes for any reason.
    """

    def __init__(
        self,
        *,
        on_push: Callable[[Any], None] | None = None,
        on_lost: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self.on_push = on_push
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._writable: asyncio.Event = asyncio.Event()
        self._writable.set()
        self.closed = False
        self.last_data_at = 0.0
        self._loop = asyncio.get_running_loop()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Bound the bytes a stalled server can make us hold; writers wait on ``writable``.
        transport.set_write_buffer_limits(high=4 * 1024 * 1024)
        self.last_data_at = self._loop.time()

    def data_received(self, data: bytes) -> None:
        self.last_data_at = self._loop.time()
        buf = self._buffer
        buf += data
        try:
            replies, used = parse_replies(buf)
        except (RespProtocolError, ValueError) as exc:
            self.abort(exc)
            return
        if used:
            del buf[:used]
        waiters = self._waiters
        for reply in replies:
            if waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    if isinstance(reply, RespError):
                        waiter.set_exception(reply)
                    else:
                        waiter.set_result(reply)
            elif self.on_push is not None:
                self.on_push(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._writable.set()
        error = exc or ConnectionResetError("Redis closed the connection")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        if self.on_lost is not None:
            self.on_lost(exc)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # API

    @property
    def writable(self) -> bool:
        return self._writable.is_set()

    async def wait_writable(self, limit_seconds: float) -> bool:
        if self._writable.is_set():
            return True
        try:
            async with asyncio.timeout(limit_seconds):
                await self._writable.wait()
        except TimeoutError:
            return False
        return True

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            raise ConnectionResetError("Redis connection is closed")
        self.transport.write(data)

    def writelines(self, chunks: list[bytes]) -> None:
        if self.transport is None or self.closed:
            raise ConnectionResetError("Redis connection is closed")
        self.transport.writelines(chunks)

    async def request(self, *args: bytes, limit_seconds: float) -> Any:
        """Send one command and wait for its reply (only before pushes start flowing)."""
        waiter: asyncio.Future[Any] = self._loop.create_future()
        self._waiters.append(waiter)
        self.write(encode_command(*args))
        async with asyncio.timeout(limit_seconds):
            return await waiter

    def abort(self, exc: BaseException | None = None) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


async def resp_connect(
    *,
    host: str,
    port: int,
    connect_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    username: str | None = None,
    password: str | None = None,
    on_push: Callable[[Any], None] | None = None,
    on_lost: Callable[[BaseException | None], None] | None = None,
) -> RespConnection:
    """Open a connection, authenticate, and check it with a PING, all within the timeout."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(connect_timeout):
        _, protocol = await loop.create_connection(
            lambda: RespConnection(on_push=on_push, on_lost=on_lost),
            host,
            port,
            ssl=ssl_context,
        )
        try:
            if password is not None:
                auth = (username.encode(), password.encode()) if username else (password.encode(),)
                await protocol.request(b"AUTH", *auth, limit_seconds=connect_timeout)
            await protocol.request(b"PING", limit_seconds=connect_timeout)
        except BaseException:
            protocol.abort()
            raise
    return protocol
