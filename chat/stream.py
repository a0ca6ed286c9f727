"""Server-sent events: a live socket over one long HTTP response (docs/sse.md).

``GET /api/events/stream`` is a ``chat.live_socket`` like a WebSocket; only the transport
differs. Each server frame goes out as one event (``event:`` its ``type``, ``data:`` its
JSON); ``connected``, each durable event and each ``resync`` carry an ``id:``, a cursor
(``chat.stream_cursor``) of the client's position in every conversation the stream follows,
so that ``Last-Event-ID`` on a reconnect resumes all of them at once. A comment line
(``: ping``) every ``HEARTBEAT_INTERVAL_SECONDS`` keeps proxies and the client from taking a
quiet stream for a dead one. There are no client frames: writes go through REST.

Where a WebSocket is closed with a code, a stream sends a last ``close`` event
(``{"type": "close", "event_id", "ts", "code"}``) and ends; before it is accepted it
answers with an HTTP status instead (401, 403, 429, 503 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer

from accounts.stream_auth import http_reply, retry_after
from chat import selectors
from chat.event_types import DURABLE_TYPES, now_iso
from chat.frames import frame_serialize
from chat.live_socket import LiveSocketMixin
from chat.stream_cursor import CursorInvalid, cursor_decode, cursor_encode, cursor_positions
from realtime_project.close_codes import (
    WS_1001_GOING_AWAY,
    WS_1011_INTERNAL_ERROR,
    WS_1012_SERVICE_RESTART,
    WS_1013_TRY_AGAIN_LATER,
    WS_4401_UNAUTHORIZED,
    WS_4403_FORBIDDEN,
    WS_4429_TOO_MANY,
)
from realtime_project.conf import realtime_settings
from realtime_project.database import database_async
from realtime_project.runtime.dispatch import LeanDispatchMixin

logger = logging.getLogger(__name__)

# The client's reconnection delay, sent once (EventSource's default differs per browser).
RECONNECT_MILLISECONDS = 1000

# Refusal close codes -> (HTTP status, detail, whether to send Retry-After).
_REFUSALS: dict[int, tuple[int, str, bool]] = {
    WS_4401_UNAUTHORIZED: (
        401,
        "Authentication credentials were not provided or are invalid.",
        False,
    ),
    WS_4403_FORBIDDEN: (403, "You do not have permission to perform this action.", False),
    WS_4429_TOO_MANY: (429, "Too many open connections for this user.", False),
    WS_1013_TRY_AGAIN_LATER: (503, "Too many connects in progress; retry later.", True),
    WS_1012_SERVICE_RESTART: (503, "This instance is shutting down; reconnect.", True),
}


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def sse_event(name: str, data: str, *, event_id: str | None = None) -> bytes:
    """One event in the ``text/event-stream`` format (``data`` holds no newline)."""
    head = f"event: {name}\n" if event_id is None else f"event: {name}\nid: {event_id}\n"
    return f"{head}data: {data}\n\n".encode()


class EventStreamConsumer(LeanDispatchMixin, LiveSocketMixin, AsyncHttpConsumer):
    """The event-stream transport of a live socket; see the module docstring."""

    transport_name = "sse"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.live_init()
        # From Last-Event-ID: the positions the client claims, until the resume replayed
        # what they lack (the ids sent meanwhile must not claim more than was sent).
        self.claims: dict[str, int] = {}
        self.cursor: dict[bytes, int] | None = None
        self.started = False
        self.close_code: int | None = None
        self.heartbeat: asyncio.Task[None] | None = None

    # -- the request -------------------------------------------------------------------------

    async def http_request(self, message: dict[str, Any]) -> None:
        if message.get("more_body"):
            return  # a GET has no body worth waiting for
        if self.scope.get("method") != "GET":
            await http_reply(self.send, 405, "Method not allowed.", [(b"allow", b"GET")])
            raise StopConsumer()
        last_event_id = _header(self.scope, b"last-event-id")
        user = self.scope.get("user")
        if last_event_id and self.scope.get("auth_close_code") is None and user is not None:
            try:
                self.cursor = cursor_decode(last_event_id.strip(), user_id=str(user.pk))
            except CursorInvalid as exc:
                # Never half believed: the client reconnects without it and refetches by REST.
                await http_reply(self.send, 400, f"Invalid Last-Event-ID: {exc}.")
                raise StopConsumer() from None
        if not await self.live_connect():
            raise StopConsumer()
        try:
            await self._resume()
        except Exception:
            # The log unreachable: the client reconnects with the same Last-Event-ID.
            logger.exception("resuming a stream failed for user=%s", self.user_id)
            await self.server_close(code=WS_1011_INTERNAL_ERROR)
            return
        self.heartbeat = asyncio.ensure_future(self._heartbeat())

    async def http_disconnect(self, message: dict[str, Any]) -> None:
        """The client went away, or the response ended (Daphne says so either way)."""
        await self._finish(self.close_code if self.close_code is not None else WS_1001_GOING_AWAY)
        raise StopConsumer()

    async def live_before_accept(self) -> None:
        if self.cursor is None:
            return
        followed = list(self.positions.cursors)
        claims = cursor_positions(self.cursor, followed)
        unlisted = [cid for cid in followed if cid not in claims]
        if unlisted:
            # Joined after the cursor was issued: owed from the event that added the user
            # (or from the start, for a conversation the user was in from its creation).
            added = await database_async(selectors.member_added_events)(
                pairs={(self.user_id, cid) for cid in unlisted}
            )
            for cid in unlisted:
                entry = added.get((self.user_id, cid))
                claims[cid] = entry.seq - 1 if entry is not None else 0
        self.claims = claims

    async def _resume(self) -> None:
        if not self.claims:
            return
        answers = await self.resume(dict(self.claims))
        for conversation_id, answer in answers.items():
            if not answer["recovered"] and answer["seq"] is not None:
                # Too far behind to replay: the client refetches by REST and goes on from here.
                self.claims.pop(conversation_id, None)
                await self._send_resync(conversation_id)
        self.claims = {}

    async def _send_resync(self, conversation_id: str) -> None:
        frame = {
            "type": "resync",
            "event_id": uuid.uuid4().hex,
            "ts": now_iso(),
            "conversation_id": conversation_id,
        }
        if not self.closing:
            await self._write(sse_event("resync", frame_serialize(frame), event_id=self._id()))

    # -- the transport -----------------------------------------------------------------------

    async def transport_accept(self) -> None:
        await self.send_headers(
            status=200,
            headers=[
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-store"),
                # Proxies that buffer responses (nginx) must pass each event on at once.
                (b"x-accel-buffering", b"no"),
            ],
        )
        self.started = True
        await self._write(f"retry: {RECONNECT_MILLISECONDS}\n\n".encode())

    async def transport_refuse(self, code: int) -> None:
        self.closing = True
        status, detail, retry = _REFUSALS.get(code, (403, "Refused.", False))
        headers = [(b"retry-after", retry_after())] if retry else []
        if status == 401:
            headers.append((b"www-authenticate", b"Token"))
        await http_reply(self.send, status, detail, headers)

    async def transport_send(self, frame: dict[str, Any]) -> None:
        kind = str(frame.get("type"))
        data = frame_serialize(frame)
        event_id: str | None = None
        if kind in DURABLE_TYPES and "seq" in frame:
            conversation_id = str(frame.get("conversation_id"))
            if conversation_id in self.claims:
                self.claims[conversation_id] = int(frame["seq"])
            event_id = self._id()
        elif kind == "connected":
            event_id = self._id()
        await self._write(sse_event(kind, data, event_id=event_id))

    def _id(self) -> str:
        """Where the client stands now in every followed conversation, as a cursor."""
        positions = {
            cid: self.claims.get(cid, cursor.high) for cid, cursor in self.positions.cursors.items()
        }
        return cursor_encode(positions, user_id=self.user_id)

    async def transport_close(self, code: int) -> None:
        self.close_code = code
        if self.started:
            frame = frame_serialize(
                {"type": "close", "event_id": uuid.uuid4().hex, "ts": now_iso(), "code": code}
            )
            with contextlib.suppress(Exception):
                await self.send_body(sse_event("close", frame), more_body=True)
                await self.send_body(b"", more_body=False)
        # Cleanup at once, not when the server reports the response finished: a drain or a
        # revocation counts on the socket being gone from the registry promptly.
        await self._finish(code)

    async def _write(self, chunk: bytes) -> None:
        await self.send_body(chunk, more_body=True)

    async def _heartbeat(self) -> None:
        interval = realtime_settings.HEARTBEAT_INTERVAL_SECONDS
        while not self.closing:
            await asyncio.sleep(interval)
            if self.closing:
                return
            try:
                await self._write(b": ping\n\n")
            except Exception:
                logger.exception("stream heartbeat failed for user=%s", self.user_id)
                return

    async def _finish(self, code: int) -> None:
        self.closing = True
        task, self.heartbeat = self.heartbeat, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        await self.live_disconnect(code)
