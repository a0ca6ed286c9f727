"""The client: one socket at a time over a list of URLs, resumed on every connect.

What it promises the app, whatever the network, Redis or an instance does:

- every durable event (``message``, ``read``, ``member``) of a followed conversation is handed
  out once, in ``seq`` order (``Sequencer``), whether it came live, replayed by ``resume`` or
  refetched by REST (``GET /api/conversations/{id}/events?after_seq=``);
- a message given to ``send_message`` is stored once: it waits in an outbox under its
  ``client_id`` and is sent again, with the same ``client_id``, after each resume until the
  server acknowledges it (or the replay shows it stored);
- ``typing`` and ``presence`` are handed out as they come (no ``seq``, may be lost);
- a socket never outlives its authority: ``4401`` asks ``token_refresh`` for a new token
  (or stops), ``4403`` stops.

``Observer`` sees the wire as it is (every frame before any de-duplication, each socket's
open and close); the fault tests count deliveries with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import itertools
import logging
import random as random_module
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from realtime_client.backoff import Backoff, Random
from realtime_client.close_codes import (
    WS_1000_NORMAL_CLOSURE,
    WS_1012_SERVICE_RESTART,
    WS_4401_UNAUTHORIZED,
    WS_4403_FORBIDDEN,
)
from realtime_client.errors import (
    ClientClosed,
    ConnectionLost,
    Forbidden,
    HttpError,
    NotConnected,
    ProtocolError,
    RealtimeError,
    RequestTimeout,
    ServerError,
    Unauthorized,
)
from realtime_client.events import (
    Ack,
    Connected,
    DurableEvent,
    ErrorFrame,
    Event,
    Frame,
    FrameError,
    MemberEvent,
    Message,
    MessageEvent,
    Pong,
    ReadEvent,
    Reset,
    Resumed,
    parse_frame,
)
from realtime_client.outbox import Outbox, Outgoing
from realtime_client.rest import http_base, rest_json
from realtime_client.sequencer import Sequencer
from realtime_client.wire import frame_read, frame_text

logger = logging.getLogger("realtime_client")

State = Literal["idle", "connecting", "open", "reconnecting", "closed"]
Opener = Callable[[str, float], Awaitable[ClientConnection]]
EventHandler = Callable[[Event], Awaitable[None] | None]

# The REST events endpoint answers at most RESUME_MAX_EVENTS a page; a failed page is retried
# this many times (with backoff) before the conversation waits for the next resume.
_FILL_ATTEMPTS = 5


@dataclasses.dataclass(frozen=True, slots=True)
class StateChange:
    state: State
    previous: State
    url: str | None = None
    code: int | None = None  # the close code that caused a reconnect
    reason: str | None = None
    delay: float | None = None  # seconds before the next attempt


class Observer:
    """Hooks on the wire, each a no-op here; override the ones wanted. They run in the
    client's reading task and must not block."""

    def connecting(self, url: str) -> None:
        """A connect attempt to ``url`` begins."""

    def connected(self, url: str, hello: Connected) -> None:
        """The socket's ``connected`` frame arrived."""

    def resume_sent(self, positions: Mapping[str, int]) -> None:
        """The ``resume`` frame with these positions went out."""

    def frame(self, frame: Frame) -> None:
        """A frame off the wire, before any de-duplication."""

    def resumed(self, ack: Ack) -> None:
        """The resume ``ack`` arrived (every replayed event came before it)."""

    def acknowledged(self, conversation_id: str, seq: int) -> None:
        """A frame of this client's own was acknowledged with ``seq``: the socket that sent it
        gets the ack, not the event."""

    def closed(self, code: int | None, reason: str | None) -> None:
        """The socket closed (``code`` None: it never completed a close handshake)."""

    def refused(self, url: str, status: int, delay: float) -> None:
        """The upgrade was answered ``status`` instead of a handshake (``503``: the instance
        sheds connects); the next attempt is in ``delay`` seconds."""


class Client:
    """An asyncio client of the realtime backbone. Use it as ``async with Client(...) as c``
    (connected and resumed on entry) or ``await c.start()`` / ``await c.close()``."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        token: str,
        user_id: str | None = None,
        positions: Mapping[str, int] | None = None,
        api_url: str | None = None,
        token_refresh: Callable[[], Awaitable[str]] | None = None,
        on_event: EventHandler | None = None,
        on_state: Callable[[StateChange], None] | None = None,
        observer: Observer | None = None,
        backoff: Backoff | None = None,
        ack_timeout: float = 10.0,
        open_timeout: float = 10.0,
        gap_timeout: float | None = 3.0,
        refetch_limit: int = 5000,
        event_buffer: int = 1000,
        dedup_size: int = 10_000,
        max_queue: int = 64,
        use_proxy: bool = True,
        opener: Opener | None = None,
        random: Random = random_module.random,
    ) -> None:
        self._urls = [urls] if isinstance(urls, str) else list(urls)
        if not self._urls:
            raise ValueError("at least one URL is needed")
        self.token = token
        self.user_id = user_id
        self.api_url = api_url
        self.token_refresh = token_refresh
        self.on_event = on_event
        self.on_state = on_state
        self.observer = observer or Observer()
        self.backoff = backoff or Backoff()
        self.ack_timeout = ack_timeout
        self.open_timeout = open_timeout
        self.gap_timeout = gap_timeout
        self.refetch_limit = refetch_limit
        self.dedup_size = dedup_size
        self.max_queue = max_queue
        self.use_proxy = use_proxy
        self._opener = opener or self._connect
        self._random = random
        self._seq: Sequencer[DurableEvent] = Sequencer(positions)
        self._url_index = 0
        self._state: State = "idle"
        self._ws: ClientConnection | None = None
        self.connected: Connected | None = None  # the current socket's ``connected`` frame
        self._resume_ref: str | None = None
        self._resumed = asyncio.Event()
        self._stopped = asyncio.Event()
        self._failure: ClientClosed | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refs = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Ack]] = {}
        self._outbox = Outbox()
        self._seen: OrderedDict[str, None] = OrderedDict()  # recent event_ids
        self._filling: dict[str, asyncio.Task[None]] = {}
        self._gap_timers: dict[str, asyncio.Task[None]] = {}
        # Bounded: an app that stops iterating stops the reading, and the server then treats
        # this socket as a slow consumer (4008) instead of this process growing without end.
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=event_buffer)

    # -- what the app sees ----------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def positions(self) -> dict[str, int]:
        """``{conversation_id: seq}``: the last contiguous seq handed out, as sent in resume."""
        return self._seq.positions

    @property
    def pending_messages(self) -> int:
        return len(self._outbox)

    @property
    def urls(self) -> list[str]:
        return list(self._urls)

    @urls.setter
    def urls(self, urls: Sequence[str]) -> None:
        """New URLs for the next connect attempt (the open socket stays)."""
        if not urls:
            raise ValueError("at least one URL is needed")
        self._urls = list(urls)
        self._url_index = 0

    def track(self, conversation_id: str, seq: int) -> None:
        """Follow a conversation from ``seq`` (its REST ``last_seq``) unless already followed."""
        self._seq.track(str(conversation_id), int(seq))

    def forget(self, conversation_id: str) -> None:
        self._seq.forget(str(conversation_id))

    async def events(self) -> AsyncIterator[Event]:
        """Every event, in order, until the client is closed (when no ``on_event`` is set)."""
        while True:
            event = await self._queue.get()
            if event is None:
                return
            yield event

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting (in the background); returns at once."""
        if self._run_task is None or self._run_task.done():
            self._stopped.clear()
            self._failure = None
            self._run_task = asyncio.create_task(self._run())

    async def wait_resumed(self, *, within: float | None = None) -> Connected:
        """Wait until a socket is open and its resume acknowledged."""
        resumed = asyncio.ensure_future(self._resumed.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait(
                {resumed, stopped}, timeout=within, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            resumed.cancel()
            stopped.cancel()
        if self._resumed.is_set() and self.connected is not None:
            return self.connected
        if self._stopped.is_set():
            raise self._failure or ClientClosed("the client is closed")
        raise RequestTimeout(f"no resumed socket within {within}s")

    async def close(self) -> None:
        """Stop for good: close the socket, fail what waits (the outbox with ``closed``)."""
        self._stop(None)
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(WS_1000_NORMAL_CLOSURE)
        if self._run_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                async with asyncio.timeout(5):
                    await self._run_task
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def __aenter__(self) -> Client:
        await self.start()
        await self.wait_resumed(within=self.open_timeout * 3)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- sending ---------------------------------------------------------------------------

    async def request(self, frame: Mapping[str, Any], *, within: float | None = None) -> Ack:
        """Send a client frame with a fresh ``ref`` on the open socket; its ``ack``.
        ``ServerError`` for an ``error`` reply, ``ConnectionLost`` if the socket closes first,
        ``NotConnected`` when none is open."""
        ws = self._ws
        if ws is None:
            raise NotConnected("no open socket")
        ref = self._ref("r")
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        try:
            await ws.send(frame_text({**frame, "ref": ref}))
            async with asyncio.timeout(within or self.ack_timeout):
                return await future
        except websockets.ConnectionClosed:
            raise ConnectionLost("the socket closed before the reply") from None
        except TimeoutError:
            raise RequestTimeout(f"no reply to {frame.get('type')} within the timeout") from None
        finally:
            self._pending.pop(ref, None)

    async def send_message(
        self,
        conversation_id: str,
        body: str,
        *,
        client_id: str | None = None,
        within: float | None = None,
    ) -> Message:
        """Store a message once, however many reconnects that takes; the stored message.
        ``within`` bounds the wait only: the message stays in the outbox."""
        client_id = client_id or uuid.uuid4().hex
        entry = self._outbox.get(client_id)
        if entry is None:
            if self._stopped.is_set():
                raise self._failure or ClientClosed("the client is closed")
            entry = self._outbox.add(client_id, str(conversation_id), body)
            ws = self._ws
            if ws is not None and self._resumed.is_set():
                await self._send_outgoing(ws, entry)
        if within is None:
            return await asyncio.shield(entry.future)
        try:
            async with asyncio.timeout(within):
                return await asyncio.shield(entry.future)
        except TimeoutError:
            raise RequestTimeout(f"message {client_id} not stored within {within}s") from None

    async def typing(self, conversation_id: str, is_typing: bool = True) -> Ack:
        return await self.request(
            {"type": "typing", "conversation_id": conversation_id, "is_typing": is_typing}
        )

    async def mark_read(self, conversation_id: str, message_ids: Sequence[str]) -> Ack:
        return await self.request(
            {"type": "read", "conversation_id": conversation_id, "message_ids": list(message_ids)}
        )

    async def set_status(self, status: str) -> Ack:
        return await self.request({"type": "status", "status": status})

    # -- the connection loop ---------------------------------------------------------------

    def _ref(self, prefix: str) -> str:
        return f"{prefix}{next(self._refs)}"

    def _url(self) -> str:
        return self._urls[self._url_index % len(self._urls)]

    def _next_url(self) -> None:
        self._url_index = (self._url_index + 1) % len(self._urls)

    def _set_state(self, state: State, **details: Any) -> None:
        previous, self._state = self._state, state
        if self.on_state is not None and previous != state:
            self.on_state(StateChange(state=state, previous=previous, **details))

    async def _connect(self, url: str, open_timeout: float) -> ClientConnection:
        return await connect(
            url,
            open_timeout=open_timeout,
            max_size=2**22,
            max_queue=self.max_queue,
            proxy=True if self.use_proxy else None,
        )

    def _query(self) -> str:
        params = {"token": self.token}
        if self.user_id is not None:
            params["user_id"] = str(self.user_id)
        return urlencode(params)

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the client is closed meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopped.wait()

    async def _run(self) -> None:
        attempt = 0  # failures since the last resumed socket
        refused = 0  # 4401s in a row: a refreshed token refused too means stop
        while not self._stopped.is_set():
            url = self._url()
            self._set_state("connecting" if self._state == "idle" else "reconnecting", url=url)
            self.observer.connecting(url)
            separator = "&" if "?" in url else "?"
            try:
                ws = await self._opener(f"{url}{separator}{self._query()}", self.open_timeout)
            except InvalidStatus as exc:
                # 503 before the handshake: the instance sheds connects and says when to come back.
                delay = self.backoff.after_refusal(exc.response.headers, attempt, self._random)
                self.observer.refused(url, exc.response.status_code, delay)
                logger.debug("connect to %s refused (%r); next in %.2fs", url, exc, delay)
                attempt += 1
                self._next_url()
                await self._pause(delay)
                continue
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                delay = self.backoff.full_jitter(attempt, self._random)
                logger.debug("connect to %s failed (%r); next in %.2fs", url, exc, delay)
                attempt += 1
                self._next_url()
                await self._pause(delay)
                continue
            code, reason, resumed = await self._session(ws, url)
            if self._stopped.is_set():
                break
            if resumed:
                attempt, refused = 0, 0
            if code == WS_4403_FORBIDDEN:
                self._stop(Forbidden("4403: user_id does not match the token"))
                break
            if code == WS_4401_UNAUTHORIZED:
                refused += 1
                if self.token_refresh is None or refused > 1:
                    self._stop(Unauthorized("4401: the token is missing, expired or revoked"))
                    break
                try:
                    self.token = await self.token_refresh()
                except Exception as exc:
                    self._stop(Unauthorized(f"4401 and no fresh token: {exc!r}"))
                    break
                delay = self.backoff.full_jitter(0, self._random)
            else:
                delay = self.backoff.after_close(code, reason, attempt, self._random)
                attempt += 1
                if code == WS_1012_SERVICE_RESTART or not resumed:
                    self._next_url()
            self._set_state("reconnecting", url=url, code=code, reason=reason, delay=delay)
            await self._pause(delay)
        self._set_state("closed")

    def _stop(self, failure: ClientClosed | None) -> None:
        if self._stopped.is_set():
            return
        self._failure = failure
        self._stopped.set()
        self._outbox.fail_all(failure or ClientClosed("the client is closed"))
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    async def _session(self, ws: ClientConnection, url: str) -> tuple[int | None, str | None, bool]:
        """Run one socket to its close: (close code, close reason, whether it resumed)."""
        resumed = False
        try:
            async with asyncio.timeout(self.open_timeout):
                hello = await ws.recv()
            frame = frame_read(hello)
            self.observer.frame(frame)
            connected = parse_frame(frame)
            if not isinstance(connected, Connected):
                raise ProtocolError(f"the first frame was not connected: {frame!r}")
            self.connected = connected
            self._ws = ws
            self.observer.connected(url, connected)
            self._set_state("open", url=url)
            self._resume_ref = self._ref("resume")
            positions = self._seq.positions
            await ws.send(
                frame_text({"type": "resume", "ref": self._resume_ref, "positions": positions})
            )
            self.observer.resume_sent(positions)
            async for raw in ws:
                try:
                    incoming = frame_read(raw)
                except ValueError:
                    logger.warning("a frame that is not JSON: %r", raw[:200])
                    continue
                await self._on_frame(ws, incoming)
        except websockets.ConnectionClosed:
            pass
        except (TimeoutError, OSError, ValueError, RealtimeError) as exc:
            logger.warning("socket to %s dropped: %r", url, exc)
        except Exception:
            # A bug here (or in an observer) costs this socket, never the connection loop.
            logger.exception("socket to %s dropped", url)
        finally:
            resumed = self._resumed.is_set()
            self._resumed.clear()
            self._resume_ref = None
            if self._ws is ws:
                self._ws = None
            self.connected = None
            with contextlib.suppress(Exception):
                await ws.close()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionLost("the socket closed before the reply"))
            self._pending.clear()
            self._outbox.socket_closed()
            self.observer.closed(ws.close_code, ws.close_reason)
        return ws.close_code, ws.close_reason, resumed

    # -- what arrives ----------------------------------------------------------------------

    async def _on_frame(self, ws: ClientConnection, frame: Frame) -> None:
        self.observer.frame(frame)
        try:
            parsed = parse_frame(frame)
        except FrameError as exc:
            logger.warning("a frame off the contract, dropped: %s", exc)
            return
        if isinstance(parsed, Ack | ErrorFrame):
            await self._on_reply(ws, parsed)
            return
        if isinstance(parsed, Pong | Connected):
            return
        event_id = frame.get("event_id")
        if isinstance(event_id, str) and event_id:
            if event_id in self._seen:
                return
            self._seen[event_id] = None
            if len(self._seen) > self.dedup_size:
                self._seen.popitem(last=False)
        if isinstance(parsed, MessageEvent | ReadEvent | MemberEvent):
            await self._on_durable(parsed)
        else:
            await self._emit(parsed)  # typing, presence, and types newer than this client

    async def _on_reply(self, ws: ClientConnection, reply: Ack | ErrorFrame) -> None:
        ref = reply.ref
        if ref is None:
            if isinstance(reply, ErrorFrame):
                logger.warning("an error for no frame of ours: %s %s", reply.code, reply.message)
            return
        if ref == self._resume_ref:
            await self._on_resumed(ws, reply)
            return
        entry = self._outbox.by_ref(ref)
        if entry is not None:
            if isinstance(reply, Ack) and reply.message is not None:
                await self._own(reply.message.conversation_id, reply.message.seq)
                self._outbox.settle(entry.client_id, reply.message)
            elif isinstance(reply, ErrorFrame):
                # A refusal is final: the same frame would be refused again.
                self._outbox.reject(
                    entry.client_id, ServerError(reply.code, reply.message, ref=ref)
                )
            return
        future = self._pending.get(ref)
        if future is None or future.done():
            return
        if isinstance(reply, ErrorFrame):
            future.set_exception(ServerError(reply.code, reply.message, ref=ref))
            return
        # The socket that sent a frame gets its ack, not its event: the ack's seq is held.
        message = reply.message
        if message is not None:
            await self._own(message.conversation_id, message.seq)
        elif isinstance(reply.data.get("seq"), int) and "conversation_id" in reply.data:
            await self._own(str(reply.data["conversation_id"]), int(reply.data["seq"]))
        future.set_result(reply)

    async def _own(self, conversation_id: str, seq: int) -> None:
        self.observer.acknowledged(conversation_id, seq)
        if self._seq.tracks(conversation_id):
            for event in self._seq.accept(conversation_id, seq, None):
                await self._emit(event)

    async def _on_resumed(self, ws: ClientConnection, reply: Ack | ErrorFrame) -> None:
        answers: dict[str, tuple[bool, int | None]] = {}
        if isinstance(reply, Ack):
            self.observer.resumed(reply)
            states = reply.data.get("conversations") or {}
            for conversation_id, answer in states.items():
                if not isinstance(answer, dict):
                    continue
                recovered = answer.get("recovered") is True
                latest = answer.get("seq")
                answers[str(conversation_id)] = (
                    recovered,
                    latest if isinstance(latest, int) else None,
                )
        else:
            # Refused whole: every conversation catches up by REST.
            logger.warning("resume refused: %s %s", reply.code, reply.message)
            answers = {c: (False, 0) for c in self._seq.positions}
        for conversation_id, (recovered, latest) in answers.items():
            if recovered:
                continue
            if latest is None:
                # Not a participant (any more): nothing to resume, ever.
                self._seq.forget(conversation_id)
                await self._emit(Reset(conversation_id, "not_participant", None))
            else:
                self._fill_soon(conversation_id)
        await self._emit(Resumed(answers))
        self._resumed.set()
        # Only now: a message stored before its ack was lost came back in the replay and
        # settled its entry, so nothing is sent twice for nothing.
        self._spawn(self._flush_outbox(ws))

    async def _flush_outbox(self, ws: ClientConnection) -> None:
        """Send what waits, oldest first (one task: the server stores them in that order)."""
        for entry in self._outbox.unsent():
            if self._ws is not ws:
                return
            if entry.in_flight is None and self._outbox.get(entry.client_id) is entry:
                await self._send_outgoing(ws, entry)

    async def _send_outgoing(self, ws: ClientConnection, entry: Outgoing) -> None:
        ref = self._ref("m")
        self._outbox.sending(entry, ref)
        frame = {
            "type": "message",
            "ref": ref,
            "conversation_id": entry.conversation_id,
            "body": entry.body,
            "client_id": entry.client_id,
        }
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(frame_text(frame))

    async def _on_durable(self, event: DurableEvent) -> None:
        conversation_id = event.conversation_id
        item: DurableEvent | None = event
        if isinstance(event, MessageEvent):
            message = event.message
            mine = self.connected is not None and message.sender_id == self.connected.user_id
            if mine and message.client_id is not None and message.client_id in self._outbox:
                # Stored before its ack was lost: the app has it from send_message.
                self._outbox.settle(message.client_id, message)
                item = None
        for ready in self._seq.accept(conversation_id, event.seq, item):
            await self._emit(ready)
            if (
                isinstance(ready, MemberEvent)
                and ready.action == "removed"
                and self.connected is not None
                and ready.user_id == self.connected.user_id
            ):
                # The last event of it this user gets.
                self._seq.forget(conversation_id)
        if conversation_id in self._seq.gapped():
            self._watch_gap(conversation_id)

    async def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            # A failing handler is the app's bug: it must not end the connection loop (the
            # event still counts as handed out, as the next one would be).
            try:
                result = self.on_event(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("on_event failed on %s", event.type)
            return
        await self._queue.put(event)

    # -- catching up by REST ---------------------------------------------------------------

    def _spawn(self, coroutine: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _watch_gap(self, conversation_id: str) -> None:
        """The server heals its own gaps; this is the safety net if it does not in time."""
        if self.gap_timeout is None or conversation_id in self._gap_timers:
            return
        timeout = self.gap_timeout

        async def watch() -> None:
            try:
                await self._pause(timeout)
                if conversation_id in self._seq.gapped() and not self._stopped.is_set():
                    self._fill_soon(conversation_id)
            finally:
                self._gap_timers.pop(conversation_id, None)

        self._gap_timers[conversation_id] = self._spawn(watch())

    def _fill_soon(self, conversation_id: str) -> None:
        if conversation_id not in self._filling:
            task = self._spawn(self._fill(conversation_id))
            self._filling[conversation_id] = task
            task.add_done_callback(lambda _: self._filling.pop(conversation_id, None))

    async def _fill(self, conversation_id: str) -> None:
        """Fetch the events after the position, page after page, up to ``last_seq``."""
        failures = 0
        while not self._stopped.is_set():
            position = self._seq.position(conversation_id)
            if position is None:
                return
            base = self.api_url or http_base(self._url())
            try:
                page = await rest_json(
                    base,
                    "GET",
                    f"/api/conversations/{conversation_id}/events?after_seq={position}",
                    token=self.token,
                    use_proxy=self.use_proxy,
                )
            except HttpError as exc:
                if exc.status in (403, 404):
                    self._seq.forget(conversation_id)
                    await self._emit(Reset(conversation_id, "not_participant", None))
                    return
                failures += 1
            except (OSError, ValueError) as exc:
                logger.debug("events of %s: %r", conversation_id, exc)
                failures += 1
            else:
                last_seq = int(page.get("last_seq", 0))
                frames = page.get("events") or []
                if last_seq - position > self.refetch_limit:
                    for event in self._seq.advance(conversation_id, last_seq):
                        await self._emit(event)
                    await self._emit(Reset(conversation_id, "too_far_behind", last_seq))
                    return
                for frame in frames:
                    with contextlib.suppress(FrameError):
                        parsed = parse_frame(frame)
                        if isinstance(parsed, MessageEvent | ReadEvent | MemberEvent):
                            await self._on_durable(parsed)
                if not frames or int(frames[-1].get("seq", 0)) >= last_seq:
                    return
                continue
            if failures >= _FILL_ATTEMPTS:
                return
            await self._pause(self.backoff.full_jitter(failures, self._random))
