"""Event-stream clients for tests: in-process (ASGI) and over TCP (asyncio streams).

Both read ``text/event-stream`` with ``SseParser`` into ``SseEvent``s and keep what
``EventSource`` keeps: the last ``id:`` seen (``last_event_id``), to reconnect with. The TCP
client speaks just enough HTTP/1.1 (one GET, a chunked or close-delimited body) that a test
sees every event the moment Daphne writes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from channels.testing import ApplicationCommunicator

STREAM_PATH = "/api/events/stream"


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str | None

    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.data)
        return value


class SseParser:
    """Incremental ``text/event-stream`` parser (the WHATWG algorithm, minus ``retry``)."""

    def __init__(self) -> None:
        self._buffer = ""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._has_id = False
        self.comments: list[str] = []

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buffer += chunk.decode("utf-8")
        found: list[SseEvent] = []
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            line = line.rstrip("\r")
            if not line:
                if self._data or self._event:
                    found.append(
                        SseEvent(
                            self._event or "message",
                            "\n".join(self._data),
                            self._id if self._has_id else None,
                        )
                    )
                self._event, self._data, self._id, self._has_id = "", [], None, False
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                self._event = value
            elif name == "data":
                self._data.append(value)
            elif name == "id":
                self._id, self._has_id = value, True
        return found


@dataclass
class StreamReader:
    """What a stream delivered so far, and the reading API tests share."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""  # a refusal's whole body
    events: list[SseEvent] = field(default_factory=list)
    last_event_id: str | None = None
    ended: bool = False
    parser: SseParser = field(default_factory=SseParser)
    _read: int = 0

    def _take(self, chunk: bytes) -> None:
        for event in self.parser.feed(chunk):
            self.events.append(event)
            if event.id is not None:
                self.last_event_id = event.id

    async def _more(self, within: float) -> None:
        raise NotImplementedError

    async def next_event(self, *, within: float = 5.0) -> SseEvent:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._read >= len(self.events):
            left = deadline - loop.time()
            if left <= 0 or self.ended:
                raise TimeoutError(f"no event within {within}s (ended={self.ended})")
            await self._more(left)
        event = self.events[self._read]
        self._read += 1
        return event

    async def frame_until(self, kind: str, *, within: float = 5.0) -> dict[str, Any]:
        """The next event of type ``kind`` (events before it are read past)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            event = await self.next_event(within=max(0.01, deadline - loop.time()))
            if event.event == kind:
                return event.json()

    async def wait_ended(self, *, within: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not self.ended:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"stream still open after {within}s")
            await self._more(left)

    def frames(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [e.json() for e in self.events if kind is None or e.event == kind]


class InProcessStream(StreamReader):
    """A stream on the real ASGI stack, read from the application's output queue."""

    communicator: ApplicationCommunicator

    @classmethod
    async def open(
        cls,
        application: Any,
        *,
        token: str | None = None,
        query_token: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        last_event_id: str | None = None,
        method: str = "GET",
        within: float = 5.0,
    ) -> InProcessStream:
        all_headers = list(headers or [])
        if token is not None:
            all_headers.append((b"authorization", f"Token {token}".encode()))
        if last_event_id is not None:
            all_headers.append((b"last-event-id", last_event_id.encode()))
        query = urlencode({"token": query_token}) if query_token is not None else ""
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": method,
            "path": STREAM_PATH,
            "raw_path": STREAM_PATH.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "scheme": "http",
            "headers": [(b"host", b"testserver"), *all_headers],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        stream = cls()
        stream.communicator = ApplicationCommunicator(application, scope)
        await stream.communicator.send_input({"type": "http.request", "body": b""})
        start = await stream._output(within)
        assert start["type"] == "http.response.start", start
        stream.status = int(start["status"])
        stream.headers = {
            bytes(k).decode().lower(): bytes(v).decode() for k, v in start.get("headers", [])
        }
        if stream.status != 200:
            while not stream.ended:
                await stream._more(within)
        return stream

    async def _output(self, within: float) -> dict[str, Any]:
        async with asyncio.timeout(within):
            message: dict[str, Any] = await self.communicator.output_queue.get()
        return message

    async def _more(self, within: float) -> None:
        try:
            message = await self._output(within)
        except TimeoutError:
            return
        if message["type"] != "http.response.body":
            return
        chunk = message.get("body", b"")
        if self.status != 200:
            self.body += chunk
        else:
            self._take(chunk)
        if not message.get("more_body", False):
            self.ended = True

    async def close(self) -> None:
        """The client goes away."""
        with contextlib.suppress(Exception):
            await self.communicator.send_input({"type": "http.disconnect"})
        with contextlib.suppress(Exception):
            await self.communicator.wait(timeout=5)


class TcpStream(StreamReader):
    """A stream over a real connection (a Daphne instance)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    chunked: bool = False

    @classmethod
    async def open(
        cls,
        base_url: str,
        *,
        token: str | None = None,
        last_event_id: str | None = None,
        within: float = 10.0,
    ) -> TcpStream:
        parts = urlsplit(base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        stream = cls()
        async with asyncio.timeout(within):
            stream.reader, stream.writer = await asyncio.open_connection(host, port)
        lines = [
            f"GET {STREAM_PATH} HTTP/1.1",
            f"Host: {host}:{port}",
            "Accept: text/event-stream",
            "Connection: close",
        ]
        if token is not None:
            lines.append(f"Authorization: Token {token}")
        if last_event_id is not None:
            lines.append(f"Last-Event-ID: {last_event_id}")
        stream.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await stream.writer.drain()
        async with asyncio.timeout(within):
            head = await stream.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        stream.status = int(status_line.split()[1])
        for line in header_lines:
            if ":" in line:
                name, _, value = line.partition(":")
                stream.headers[name.strip().lower()] = value.strip()
        stream.chunked = stream.headers.get("transfer-encoding", "").lower() == "chunked"
        if stream.status != 200:
            while not stream.ended:
                await stream._more(within)
        return stream

    async def _read_chunk(self) -> bytes:
        if not self.chunked:
            return await self.reader.read(65536)
        size_line = await self.reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            with contextlib.suppress(Exception):
                await self.reader.readuntil(b"\r\n")
            return b""
        data = await self.reader.readexactly(size)
        await self.reader.readexactly(2)
        return data

    async def _more(self, within: float) -> None:
        try:
            async with asyncio.timeout(within):
                chunk = await self._read_chunk()
        except TimeoutError:
            return
        except (asyncio.IncompleteReadError, ConnectionError):
            chunk = b""
        if not chunk:
            self.ended = True
            return
        if self.status != 200:
            self.body += chunk
        else:
            self._take(chunk)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
            await self.writer.wait_closed()
