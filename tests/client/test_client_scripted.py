"""The client's reactions to what a server does, against scripted sockets (no server): the
close codes and their hints, failover, token refresh, the outbox settled by a replay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import pytest
import websockets
from realtime_client import (
    Backoff,
    Client,
    Event,
    Forbidden,
    MessageEvent,
    StateChange,
    Unauthorized,
)
from realtime_client.close_codes import (
    WS_1006_ABNORMAL_CLOSURE,
    WS_1012_SERVICE_RESTART,
    WS_1013_TRY_AGAIN_LATER,
    WS_4401_UNAUTHORIZED,
    WS_4403_FORBIDDEN,
)
from websockets.asyncio.client import ClientConnection
from websockets.frames import Close

from tests.support.async_poll import async_wait_until

Frame = dict[str, Any]


class ScriptedSocket:
    """Plays a server: ``on_send`` answers what the client sends; ``push`` and ``drop``
    act on their own."""

    def __init__(self, url: str, on_send: Callable[[ScriptedSocket, Frame], None]) -> None:
        self.url = url
        self.sent: list[Frame] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._incoming: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._on_send = on_send

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.url).query)

    def push(self, frame: Frame) -> None:
        self._incoming.put_nowait(frame)

    def drop(self, code: int, reason: str = "") -> None:
        self.close_code, self.close_reason = code, reason
        self._incoming.put_nowait(None)

    async def recv(self) -> str:
        frame = await self._incoming.get()
        if frame is None:
            raise websockets.ConnectionClosedError(
                Close(self.close_code or 1006, self.close_reason or ""), None
            )
        return json.dumps(frame)

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            try:
                yield await self.recv()
            except websockets.ConnectionClosed:
                return

    async def send(self, data: str) -> None:
        if self.close_code is not None:
            raise websockets.ConnectionClosedError(None, None)
        frame = json.loads(data)
        self.sent.append(frame)
        self._on_send(self, frame)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.close_code is None:
            self.drop(code, reason)


def hello(user_id: str = "1", instance: str = "instance-1") -> Frame:
    return {
        "type": "connected",
        "event_id": "h",
        "ts": "t",
        "connection_id": "c",
        "instance_id": instance,
        "user_id": user_id,
        "heartbeat_interval": 20,
    }


def resume_ack(frame: Frame, recovered: bool = True) -> Frame:
    return {
        "type": "ack",
        "ref": frame["ref"],
        "conversations": {
            c: {"recovered": recovered, "seq": s} for c, s in frame["positions"].items()
        },
    }


def message_event(seq: int, *, sender: str = "2", client_id: str | None = None) -> Frame:
    message = {
        "id": f"m{seq}",
        "conversation_id": "7",
        "sender_id": sender,
        "body": f"b{seq}",
        "created_at": "t",
        "seq": seq,
        "client_id": client_id,
    }
    return {
        "type": "message",
        "event_id": f"e{seq}",
        "ts": "t",
        "conversation_id": "7",
        "seq": seq,
        "message": message,
    }


class Server:
    """Hands out scripted sockets in turn; ``plans[n]`` sets up the n-th one."""

    def __init__(self, *plans: Callable[[ScriptedSocket], Callable[[ScriptedSocket, Frame], None]]):
        self.plans = list(plans)
        self.sockets: list[ScriptedSocket] = []

    async def open(self, url: str, open_timeout: float) -> ClientConnection:
        if len(self.sockets) >= len(self.plans):
            raise ConnectionRefusedError("no more sockets in this script")
        index = len(self.sockets)
        socket = ScriptedSocket(url, lambda s, f: None)
        socket._on_send = self.plans[index](socket)
        self.sockets.append(socket)
        return cast(ClientConnection, socket)


def resumes(then: Callable[[ScriptedSocket], None] = lambda s: None, *, user_id: str = "1"):
    """A socket that says ``connected``, acks the resume, then runs ``then``."""

    def plan(socket: ScriptedSocket) -> Callable[[ScriptedSocket, Frame], None]:
        socket.push(hello(user_id))

        def on_send(s: ScriptedSocket, frame: Frame) -> None:
            if frame["type"] == "resume":
                s.push(resume_ack(frame))
                then(s)

        return on_send

    return plan


def closes(code: int, reason: str = ""):
    """A socket that is accepted and closed at once, with no ``connected`` frame."""

    def plan(socket: ScriptedSocket) -> Callable[[ScriptedSocket, Frame], None]:
        socket.drop(code, reason)
        return lambda s, f: None

    return plan


def client_for(server: Server, **options: Any) -> tuple[Client, list[StateChange], list[Event]]:
    states: list[StateChange] = []
    events: list[Event] = []
    client = Client(
        options.pop("urls", ["ws://one/ws/", "ws://two/ws/"]),
        token=options.pop("token", "key"),
        opener=server.open,
        on_state=states.append,
        on_event=events.append,
        random=lambda: 0.5,
        backoff=Backoff(base_seconds=0.02, cap_seconds=0.1, restart_jitter_seconds=0.02),
        **options,
    )
    return client, states, events


async def test_a_1013_hint_is_waited_out_then_the_next_url_is_tried() -> None:
    server = Server(closes(WS_1013_TRY_AGAIN_LATER, "retry_after_ms=40"), resumes())
    client, states, _ = client_for(server)
    await client.start()
    try:
        await client.wait_resumed(within=5)
        waits = [s for s in states if s.code == WS_1013_TRY_AGAIN_LATER]
        # Uniform in [N, 2N) ms: 0.5 picks the middle.
        assert [w.delay for w in waits] == [pytest.approx(0.06)]
        assert [s.url for s in server.sockets] == [u for u in ("ws://one/ws/", "ws://two/ws/")] or [
            urlsplit(s.url).netloc for s in server.sockets
        ] == ["one", "two"]
    finally:
        await client.close()


async def test_a_draining_instance_sends_the_client_at_once_to_the_next_url_resumed() -> None:
    def deliver_then_drain(socket: ScriptedSocket) -> None:
        socket.push(message_event(4))
        socket.drop(WS_1012_SERVICE_RESTART)

    server = Server(resumes(deliver_then_drain), resumes())
    client, states, events = client_for(server, positions={"7": 3})
    await client.start()
    try:
        await async_wait_until(lambda: len(server.sockets) == 2, timeout=5, what="reconnect")
        await client.wait_resumed(within=5)
        assert [urlsplit(s.url).netloc for s in server.sockets] == ["one", "two"]
        drained = [s for s in states if s.code == WS_1012_SERVICE_RESTART]
        assert drained and drained[0].delay is not None and drained[0].delay <= 0.02
        # The second socket resumes from what the first delivered.
        assert server.sockets[1].sent[0]["positions"] == {"7": 4}
        assert [e.seq for e in events if isinstance(e, MessageEvent)] == [4]
    finally:
        await client.close()


async def test_4403_stops_for_good() -> None:
    server = Server(closes(WS_4403_FORBIDDEN), resumes())
    client, _, _ = client_for(server, user_id="99")
    await client.start()
    with pytest.raises(Forbidden):
        await client.wait_resumed(within=5)
    assert len(server.sockets) == 1
    assert server.sockets[0].query["user_id"] == ["99"]
    assert client.state == "closed"
    await client.close()


async def test_4401_asks_for_a_fresh_token_once_then_stops() -> None:
    refreshed: list[str] = []

    async def refresh() -> str:
        refreshed.append("fresh")
        return "fresh"

    server = Server(closes(WS_4401_UNAUTHORIZED), resumes())
    client, _, _ = client_for(server, token_refresh=refresh)
    await client.start()
    try:
        await client.wait_resumed(within=5)
        assert [s.query["token"] for s in server.sockets] == [["key"], ["fresh"]]
    finally:
        await client.close()

    server = Server(closes(WS_4401_UNAUTHORIZED), closes(WS_4401_UNAUTHORIZED), resumes())
    client, _, _ = client_for(server, token_refresh=refresh)
    await client.start()
    with pytest.raises(Unauthorized):
        await client.wait_resumed(within=5)
    assert len(server.sockets) == 2
    await client.close()


async def test_events_from_live_and_replayed_frames_come_out_once_in_order() -> None:
    def mixed(socket: ScriptedSocket) -> None:
        for seq in (6, 4, 5, 4, 7):
            socket.push(message_event(seq))
        socket.push(message_event(6))  # the same event again

    server = Server(resumes(mixed))
    client, _, events = client_for(server, positions={"7": 3}, gap_timeout=None)
    await client.start()
    try:
        await async_wait_until(lambda: client.positions == {"7": 7}, timeout=5, what="seq 7")
        assert [e.seq for e in events if isinstance(e, MessageEvent)] == [4, 5, 6, 7]
    finally:
        await client.close()


async def test_a_message_stored_before_its_ack_was_lost_is_settled_by_the_replay() -> None:
    def lose_the_ack(socket: ScriptedSocket) -> None:
        original = socket._on_send

        def on_send(s: ScriptedSocket, frame: Frame) -> None:
            original(s, frame)
            if frame["type"] == "message":
                s.drop(WS_1006_ABNORMAL_CLOSURE)  # stored, but the ack never comes

        socket._on_send = on_send

    def replay_plan(socket: ScriptedSocket) -> Callable[[ScriptedSocket, Frame], None]:
        socket.push(hello("1"))

        def on_send(s: ScriptedSocket, frame: Frame) -> None:
            if frame["type"] == "resume":
                client_id = server.sockets[0].sent[-1]["client_id"]
                s.push(message_event(1, sender="1", client_id=client_id))
                s.push(resume_ack(frame))

        return on_send

    server = Server(resumes(lose_the_ack), replay_plan)
    client, _, events = client_for(server, positions={"7": 0})
    await client.start()
    try:
        await client.wait_resumed(within=5)
        stored = await client.send_message("7", "hello", within=5)
        assert stored.seq == 1 and stored.sender_id == "1"
        # Not sent again on the second socket, and not handed out as an event.
        assert [f["type"] for f in server.sockets[1].sent] == ["resume"]
        assert [e for e in events if isinstance(e, MessageEvent)] == []
        assert client.positions == {"7": 1}
        assert client.pending_messages == 0
    finally:
        await client.close()


async def test_a_failing_handler_does_not_end_the_connection() -> None:
    def two_events(socket: ScriptedSocket) -> None:
        socket.push(message_event(1))
        socket.push(message_event(2))

    server = Server(resumes(two_events))
    seen: list[int] = []

    def handler(event: Event) -> None:
        if isinstance(event, MessageEvent):
            seen.append(event.seq)
            if event.seq == 1:
                raise RuntimeError("the app's bug")

    client = Client("ws://one/ws/", token="key", opener=server.open, on_event=handler)
    await client.start()
    try:
        await async_wait_until(lambda: seen == [1, 2], timeout=5, what="both events")
        assert client.state == "open"
        assert len(server.sockets) == 1
    finally:
        await client.close()
