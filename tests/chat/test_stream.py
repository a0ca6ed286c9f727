"""Server-sent events in-process (docs/sse.md): the format, authentication, the cursor,
resync, heartbeats, and a stream counting as a socket (registry, limits, revocation,
membership, drain)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client
from django.utils import timezone

from accounts.authority import authority_watch
from accounts.models import AuthToken, token_digest
from chat import services
from chat.event_types import PresenceEvent, event_check, event_frame
from chat.layer_messages import realtime_event_message
from chat.models import Conversation
from chat.stream_cursor import cursor_encode
from connections.control import user_group
from connections.layer_messages import CONNECTION_CLOSE_VERSION, connection_close_message
from connections.registry import get_registry
from connections.sockets import local_sockets, sockets_close_all
from realtime_project.close_codes import (
    WS_1012_SERVICE_RESTART,
    WS_4008_SLOW_CONSUMER,
    WS_4401_UNAUTHORIZED,
)
from tests.support.async_poll import async_wait_until
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.consumer_fixtures import Demo, DemoUser
from tests.support.sse import InProcessStream
from tests.support.ws_client import frame_is

pytestmark = pytest.mark.django_db(transaction=True)

OpenStream = Callable[..., Awaitable[InProcessStream]]


@pytest.fixture
async def open_stream(stack: Any, demo: Demo) -> AsyncIterator[OpenStream]:
    opened: list[InProcessStream] = []

    async def open_(user: DemoUser | None = None, **kwargs: Any) -> InProcessStream:
        if user is not None:
            kwargs.setdefault("token", user.token)
        stream = await InProcessStream.open(stack, **kwargs)
        opened.append(stream)
        return stream

    yield open_
    for stream in opened:
        await stream.close()


@database_sync_to_async
def send(conversation_id: str, user: DemoUser, body: str) -> None:
    conversation = Conversation.objects.get(pk=conversation_id)
    with transaction.atomic():
        services.message_send(conversation=conversation, sender_id=user.id, body=body)


def durable_seqs(stream: InProcessStream, conversation_id: str) -> list[int]:
    frames = [
        f
        for f in stream.frames()
        if f.get("type") in ("message", "read", "member")
        and f.get("conversation_id") == conversation_id
    ]
    for frame in frames:
        event_check(frame)
    return [int(f["seq"]) for f in frames]


async def test_a_stream_is_a_socket_that_starts_with_connected(open_stream, demo: Demo) -> None:
    stream = await open_stream(demo.alice)
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    first = await stream.next_event()
    assert first.event == "connected" and first.id
    connected = first.json()
    event_check(connected)
    assert connected["user_id"] == demo.alice.id
    infos = await get_registry().user_connections(demo.alice.id)
    assert [i.connection_id for i in infos] == [connected["connection_id"]]
    assert infos[0].metadata.get("transport") == "sse"
    await stream.close()
    assert await get_registry().user_connection_count(demo.alice.id) == 0


async def test_events_are_the_websocket_frames_with_their_type_and_a_cursor(
    open_stream, open_socket, demo: Demo
) -> None:
    stream = await open_stream(demo.bob)
    socket = await open_socket(demo.bob)
    await socket.recv_until(frame_is("connected"))
    await stream.next_event()
    ab = demo.conversations["ab"]
    await send(ab, demo.alice, "hello")
    await stream.frame_until("message")
    event = stream.events[-1]
    assert event.event == "message" and event.id
    over_ws = await socket.recv_until(frame_is("message"))
    assert event.json() == over_ws
    # A typing indicator is no durable event: no id, the cursor stays where it was.
    await services.typing_notify_async(
        conversation_id=ab, user_id=demo.alice.id, is_typing=True, origin_channel=""
    )
    typing = await stream.frame_until("typing")
    assert typing["user_id"] == demo.alice.id
    assert stream.events[-1].id is None
    assert stream.last_event_id == event.id


async def test_no_credentials_answer_401(open_stream) -> None:
    stream = await open_stream()
    assert stream.status == 401
    assert stream.headers.get("www-authenticate") == "Token"


@pytest.mark.parametrize("token", ["not-a-token", ""])
async def test_a_bad_token_answers_401(open_stream, token: str) -> None:
    assert (await open_stream(token=token)).status == 401
    assert (await open_stream(query_token=token)).status == 401


async def test_the_token_may_come_as_a_query_parameter(open_stream, demo: Demo) -> None:
    stream = await open_stream(query_token=demo.carol.token)
    assert stream.status == 200
    assert (await stream.frame_until("connected"))["user_id"] == demo.carol.id


@pytest.fixture
def alice_session(demo: Demo) -> bytes:
    browser = Client()
    browser.force_login(get_user_model().objects.get(pk=demo.alice.id))
    value = browser.cookies[settings.SESSION_COOKIE_NAME].value
    return f"{settings.SESSION_COOKIE_NAME}={value}".encode()


async def test_the_session_cookie_authenticates_from_its_own_origin(
    open_stream, demo: Demo, alice_session: bytes
) -> None:
    cookie = alice_session
    stream = await open_stream(headers=[(b"cookie", cookie)])
    assert stream.status == 200
    assert (await stream.frame_until("connected"))["user_id"] == demo.alice.id
    foreign = await open_stream(
        headers=[(b"cookie", cookie), (b"origin", b"http://evil.example:8000")]
    )
    assert foreign.status == 403


async def test_only_get_is_served(open_stream, demo: Demo) -> None:
    assert (await open_stream(demo.alice, method="POST")).status == 405


async def test_last_event_id_replays_every_conversation_once_in_order(
    open_stream, demo: Demo
) -> None:
    ab, abc = demo.conversations["ab"], demo.conversations["abc"]
    first = await open_stream(demo.bob)
    await first.next_event()
    await send(ab, demo.alice, "one")
    await first.frame_until("message")
    cursor = first.last_event_id
    await first.close()
    for body in ("two", "three"):
        await send(ab, demo.alice, body)
    for body in ("x", "y"):
        await send(abc, demo.carol, body)
    again = await open_stream(demo.bob, last_event_id=cursor)
    assert again.status == 200
    for _ in range(5):
        await again.next_event()
    assert durable_seqs(again, ab) == [2, 3]
    assert durable_seqs(again, abc) == [1, 2]
    # Live events follow, once; the cursor now covers both conversations.
    await send(abc, demo.alice, "z")
    assert (await again.frame_until("message"))["seq"] == 3
    assert durable_seqs(again, abc) == [1, 2, 3]
    third = await open_stream(demo.bob, last_event_id=again.last_event_id)
    await send(ab, demo.alice, "four")
    assert (await third.frame_until("message"))["seq"] == 4
    assert durable_seqs(third, abc) == [] and durable_seqs(third, ab) == [4]


async def test_connected_carries_a_cursor_so_a_quiet_stream_loses_nothing(
    open_stream, demo: Demo
) -> None:
    ab = demo.conversations["ab"]
    quiet = await open_stream(demo.bob)
    connected = await quiet.next_event()
    await quiet.close()
    await send(ab, demo.alice, "while away")
    back = await open_stream(demo.bob, last_event_id=connected.id)
    await back.frame_until("message")
    assert durable_seqs(back, ab) == [1]


async def test_past_resume_max_events_a_resync_says_refetch(
    open_stream, demo: Demo, realtime_override
) -> None:
    realtime_override(RESUME_MAX_EVENTS=2)
    ab, abc = demo.conversations["ab"], demo.conversations["abc"]
    first = await open_stream(demo.bob)
    await first.next_event()
    cursor = first.last_event_id
    await first.close()
    for body in ("1", "2", "3"):
        await send(ab, demo.alice, body)
    await send(abc, demo.alice, "only one")
    again = await open_stream(demo.bob, last_event_id=cursor)
    resync = await again.frame_until("resync")
    assert resync["conversation_id"] == ab
    assert again.events[-1].id
    assert durable_seqs(again, ab) == []
    assert durable_seqs(again, abc) == [1]
    await send(ab, demo.alice, "4")
    assert (await again.frame_until("message"))["seq"] == 4


@pytest.mark.parametrize("cursor", ["%%%", "AAAA", "not-a-cursor-at-all"])
async def test_a_garbled_cursor_answers_400(open_stream, demo: Demo, cursor: str) -> None:
    stream = await open_stream(demo.bob, last_event_id=cursor)
    assert stream.status == 400
    assert await get_registry().user_connection_count(demo.bob.id) == 0


async def test_another_users_cursor_answers_400(open_stream, demo: Demo) -> None:
    alice = await open_stream(demo.alice)
    await alice.next_event()
    stolen = await open_stream(demo.dave, last_event_id=alice.last_event_id)
    assert stolen.status == 400


async def test_no_cursor_opens_a_conversation_its_user_is_not_in(open_stream, demo: Demo) -> None:
    ab = demo.conversations["ab"]
    await send(ab, demo.alice, "private")
    # Well signed for dave, and naming a conversation he is not in.
    forged = cursor_encode({ab: 0}, user_id=demo.dave.id)
    stream = await open_stream(demo.dave, last_event_id=forged)
    assert stream.status == 200
    await stream.next_event()
    await send(ab, demo.alice, "still private")
    await stream.close()
    assert durable_seqs(stream, ab) == []


async def test_a_comment_line_is_the_heartbeat(open_stream, demo: Demo, realtime_override) -> None:
    realtime_override(HEARTBEAT_INTERVAL_SECONDS=0.05)
    stream = await open_stream(demo.alice)
    await stream.next_event()

    async def pinged() -> bool:
        await stream._more(0.05)
        return stream.parser.comments.count("ping") >= 2

    await async_wait_until(pinged, what="two pings")


@sync_to_async
def _delete_token(key: str) -> None:
    AuthToken.objects.get(digest=token_digest(key)).delete()


async def test_revoking_the_token_ends_the_stream(open_stream, demo: Demo) -> None:
    stream = await open_stream(demo.alice)
    await stream.next_event()
    await _delete_token(demo.alice.token)
    closed = await stream.frame_until("close", within=2)
    assert closed["code"] == WS_4401_UNAUTHORIZED
    await stream.wait_ended(within=2)
    assert await get_registry().user_connection_count(demo.alice.id) == 0


async def test_streams_count_toward_the_socket_limit(
    open_stream, open_socket, demo: Demo, realtime_override
) -> None:
    realtime_override(MAX_SOCKETS_PER_USER=2)
    socket = await open_socket(demo.carol)
    await socket.recv_until(frame_is("connected"))
    first = await open_stream(demo.carol)
    assert first.status == 200
    refused = await open_stream(demo.carol)
    assert refused.status == 429
    assert await get_registry().user_connection_count(demo.carol.id) == 2


async def test_membership_changes_reach_a_live_stream(open_stream, demo: Demo) -> None:
    ab = demo.conversations["ab"]
    carol = await open_stream(demo.carol)
    await carol.next_event()
    conversation = await Conversation.objects.aget(pk=ab)
    await database_sync_to_async(services.participants_add)(
        conversation=conversation, user_ids=[demo.carol.id], by_id=demo.alice.id
    )
    added = await carol.frame_until("member")
    assert added["action"] == "added" and added["user_id"] == demo.carol.id
    await send(ab, demo.bob, "welcome")
    assert (await carol.frame_until("message"))["message"]["body"] == "welcome"
    await database_sync_to_async(services.participant_remove)(
        conversation=conversation, user_id=demo.carol.id, by_id=demo.carol.id
    )
    removed = await carol.frame_until("member")
    assert removed["action"] == "removed"
    await send(ab, demo.bob, "after")
    await send(demo.conversations["abc"], demo.bob, "marker")
    marker = await carol.frame_until("message")
    assert marker["conversation_id"] == demo.conversations["abc"]
    assert [f["message"]["body"] for f in carol.frames("message")] == ["welcome", "marker"]


async def test_a_drain_ends_streams_so_clients_reconnect_elsewhere(open_stream, demo: Demo) -> None:
    stream = await open_stream(demo.alice)
    await stream.next_event()
    assert local_sockets.count() >= 1
    await sockets_close_all(code=WS_1012_SERVICE_RESTART, batch_size=10, pause_seconds=0)
    assert (await stream.frame_until("close"))["code"] == WS_1012_SERVICE_RESTART
    await stream.wait_ended()
    assert await get_registry().user_connection_count(demo.alice.id) == 0


async def test_an_overflowing_queue_ends_the_stream_with_4008(open_stream, demo: Demo) -> None:
    stream = await open_stream(demo.bob)
    await stream.next_event()
    (live,) = [s for s in local_sockets.snapshot() if getattr(s, "transport_name", "") == "sse"]
    layer = get_channel_layer()
    assert layer is not None
    # What the layer sends a channel whose queue overflowed (connections/layer).
    await layer.send(live.channel_name, {"type": "channel.overflow"})  # type: ignore[attr-defined]
    assert (await stream.frame_until("close"))["code"] == WS_4008_SLOW_CONSUMER
    await stream.wait_ended()
    assert await get_registry().user_connection_count(demo.bob.id) == 0


async def test_a_stream_ignores_a_layer_message_of_a_newer_version(open_stream, demo: Demo) -> None:
    """The stream reads layer messages as a WebSocket does (docs/channel-layer.md)."""
    stream = await open_stream(demo.bob)
    await stream.next_event()
    layer = get_channel_layer()
    assert layer is not None
    group = user_group(demo.bob.id)
    newer_close = {
        **connection_close_message(code=WS_1012_SERVICE_RESTART),
        "v": CONNECTION_CLOSE_VERSION + 1,
    }
    await layer.group_send(group, newer_close)
    after = event_frame(PresenceEvent(user_id="after", status="away", last_seen=None))
    await layer.group_send(group, realtime_event_message(after))
    # Bob's own presence may come first; "after" was queued behind the newer close.
    while (await stream.frame_until("presence"))["user_id"] != "after":
        pass
    assert stream.frames("close") == [] and not stream.ended


async def test_deactivating_the_user_ends_the_stream(open_stream, demo: Demo) -> None:
    stream = await open_stream(demo.bob)
    await stream.next_event()
    user = await get_user_model().objects.aget(pk=demo.bob.id)
    user.is_active = False
    await user.asave()
    assert (await stream.frame_until("close", within=2))["code"] == WS_4401_UNAUTHORIZED
    await stream.wait_ended(within=2)


async def test_the_periodic_recheck_ends_a_stream_whose_token_went_behind_its_back(
    open_stream, demo: Demo
) -> None:
    stream = await open_stream(demo.carol)
    await stream.next_event()
    # QuerySet.update() sends no signal, so no revocation: only the re-check can notice.
    await AuthToken.objects.filter(digest=token_digest(demo.carol.token)).aupdate(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert await authority_watch.sweep() >= 1
    assert (await stream.frame_until("close", within=2))["code"] == WS_4401_UNAUTHORIZED
