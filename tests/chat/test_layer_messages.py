"""Layer messages as declared, versioned types: what a live socket does with each version.

A message of a newer version (a deployment rolling, writers ahead of this reader) is ignored,
counted and logged once, and the socket goes on; a message without a version (the release
before versions) is version 1 and read as ever.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from channels.layers import get_channel_layer

from chat.event_types import PresenceEvent, event_frame
from chat.layer_messages import (
    EVENT_MESSAGE_TYPE,
    REALTIME_EVENT_VERSION,
    RealtimeEvent,
    RealtimeJoin,
    realtime_event_message,
    realtime_join_message,
)
from connections import layer_messages
from connections import metrics as connections_metrics
from connections.control import user_group
from connections.layer_messages import (
    CLOSE_MESSAGE_TYPE,
    CONNECTION_CLOSE_VERSION,
    OVERFLOW_MESSAGE_TYPE,
    ChannelOverflow,
    ConnectionClose,
    ConnectionRevoke,
    connection_close_message,
    connection_revoke_message,
)
from realtime_layer.queues import OVERFLOW_MESSAGE
from realtime_project.close_codes import WS_1012_SERVICE_RESTART
from tests.support.consumer_fixtures import *  # noqa: F403
from tests.support.ws_client import frame_is

pytestmark = pytest.mark.django_db(transaction=True)

NEWER_IGNORED = "realtime_messages_newer_ignored_total"


def ignored(message_type: str, version: int) -> float:
    value = connections_metrics.registry.get_sample_value(
        NEWER_IGNORED, {"type": message_type, "version": str(version)}
    )
    return value or 0.0


def presence(user_id: str) -> dict[str, Any]:
    return event_frame(PresenceEvent(user_id=user_id, status="away", last_seen=None))


async def connected(open_socket, user):
    socket = await open_socket(user)
    await socket.recv_until(frame_is("connected"))
    return socket


async def test_a_newer_event_is_ignored_counted_and_the_socket_reads_what_follows(
    open_socket, demo, caplog, monkeypatch
) -> None:
    # Logged once per process: forget what earlier tests had logged.
    monkeypatch.setattr(layer_messages, "_logged", set())
    bob = await connected(open_socket, demo.bob)
    layer = get_channel_layer()
    newer_version = REALTIME_EVENT_VERSION + 1
    before = ignored(EVENT_MESSAGE_TYPE, newer_version)
    newer = presence("newer")
    caplog.set_level(logging.WARNING, logger="connections.layer_messages")
    for _ in range(2):
        # The same event id twice would be dropped by the layer as a repeat: two events.
        message = {**realtime_event_message(presence("newer")), "v": newer_version}
        await layer.group_send(user_group(demo.bob.id), message)
    message = {**realtime_event_message(newer), "v": newer_version}
    await layer.group_send(user_group(demo.bob.id), message)
    await layer.group_send(user_group(demo.bob.id), realtime_event_message(presence("current")))

    # Queued after the newer ones, so they were handled (and dropped) before it.
    await bob.recv_until(frame_is("presence", user_id="current"))
    assert [f for f in bob.frames if f.get("user_id") == "newer"] == []
    assert ignored(EVENT_MESSAGE_TYPE, newer_version) - before == 3
    warnings = [r for r in caplog.records if f"version={newer_version}" in r.getMessage()]
    assert len(warnings) == 1  # once per type and version, not once per message
    # Still open and answering.
    assert (await bob.request({"type": "ping"}))["type"] == "pong"


async def test_a_newer_close_does_not_close_and_an_unknown_type_with_a_version_is_no_crash(
    open_socket, demo
) -> None:
    alice = await connected(open_socket, demo.alice)
    layer = get_channel_layer()
    group = user_group(demo.alice.id)
    newer_close = {
        **connection_close_message(code=WS_1012_SERVICE_RESTART),
        "v": CONNECTION_CLOSE_VERSION + 1,
    }
    before = ignored(CLOSE_MESSAGE_TYPE, CONNECTION_CLOSE_VERSION + 1)
    await layer.group_send(group, newer_close)
    # A message type of a later release, which this one has no handler for.
    await layer.group_send(group, {"type": "realtime.later", "v": 1, "anything": [1, 2]})
    await layer.group_send(group, realtime_event_message(presence("after")))

    await alice.recv_until(frame_is("presence", user_id="after"))
    assert ignored(CLOSE_MESSAGE_TYPE, CONNECTION_CLOSE_VERSION + 1) - before == 1
    assert ignored("realtime.later", 1) >= 1
    assert (await alice.request({"type": "ping"}))["type"] == "pong"
    assert alice.close_code is None


async def test_messages_without_a_version_are_version_1(open_socket, demo) -> None:
    """What the release before versions sends: every field as now, no ``v``."""
    alice = await connected(open_socket, demo.alice)
    layer = get_channel_layer()
    group = user_group(demo.alice.id)
    unversioned = {k: v for k, v in realtime_event_message(presence("old")).items() if k != "v"}
    await layer.group_send(group, unversioned)
    await alice.recv_until(frame_is("presence", user_id="old"))
    await layer.group_send(group, {"type": CLOSE_MESSAGE_TYPE, "code": WS_1012_SERVICE_RESTART})
    assert await alice.wait_closed() == WS_1012_SERVICE_RESTART


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        (RealtimeEvent, realtime_event_message(presence("x"))),
        (RealtimeEvent, realtime_event_message(presence("x"), ephemeral=True)),
        (RealtimeJoin, realtime_join_message(conversation_id="c", seq=3)),
        (ConnectionClose, connection_close_message(code=1012)),
        (ConnectionRevoke, connection_revoke_message(user_id=7, token_hash=None)),
    ],
)
def test_each_builder_sends_its_declared_fields_and_a_version(declared, message) -> None:
    keys = set(message)
    assert (
        declared.__required_keys__
        <= keys
        <= declared.__required_keys__ | (declared.__optional_keys__)
    )
    assert type(message["v"]) is int and message["v"] >= 1


def test_the_layers_overflow_message_is_the_declared_one() -> None:
    """The layer builds it without knowing this project: its shape must stay the declared
    one, or a full queue would end in "no handler" instead of a 4008 close."""
    assert set(OVERFLOW_MESSAGE) == ChannelOverflow.__required_keys__
    assert OVERFLOW_MESSAGE["type"] == OVERFLOW_MESSAGE_TYPE
