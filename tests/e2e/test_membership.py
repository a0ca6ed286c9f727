"""Membership across two real instances: added sockets follow at once, removed ones lose it."""

from __future__ import annotations

import uuid

import pytest

from tests.support.cluster import E2ECluster, Sockets
from tests.support.ws_client import frame_is

pytestmark = [pytest.mark.cluster, pytest.mark.redis, pytest.mark.firestore]


async def test_membership_changes_reach_sockets_on_both_instances(
    cluster: E2ECluster, sockets: Sockets
) -> None:
    carol_id = cluster.user("carol").id
    status, created = cluster.api(
        "POST",
        "/api/conversations",
        user="alice",
        on=cluster.a,
        body={"title": f"m-{uuid.uuid4().hex[:6]}", "participant_ids": [cluster.user("bob").id]},
    )
    assert status == 201
    conversation = created["id"]
    carol_a = await sockets.open("carol", on=cluster.a)
    carol_b = await sockets.open("carol", on=cluster.b)
    bob = await sockets.open("bob", on=cluster.b)

    status, body = cluster.api(
        "POST",
        f"/api/conversations/{conversation}/participants",
        user="bob",
        on=cluster.b,
        body={"user_ids": [carol_id]},
    )
    assert status == 200
    assert {"id": carol_id, "username": "carol"} in body["participants"]
    for socket in (carol_a, carol_b):
        added = await socket.recv_until(frame_is("member", action="added"))
        assert (added["user_id"], added["seq"], added["conversation_id"]) == (
            carol_id,
            1,
            conversation,
        )
    # No reconnect: the next message reaches carol on both instances, and she may type.
    sent = await bob.request({"type": "message", "conversation_id": conversation, "body": "hi"})
    for socket in (carol_a, carol_b):
        message = await socket.recv_until(frame_is("message", conversation_id=conversation))
        assert message["message"]["id"] == sent["message"]["id"]
    typed = await carol_a.request(
        {"type": "typing", "conversation_id": conversation, "is_typing": True}
    )
    assert typed["type"] == "ack"

    status, _ = cluster.api(
        "DELETE",
        f"/api/conversations/{conversation}/participants/{carol_id}",
        user="alice",
        on=cluster.a,
    )
    assert status == 204
    removed_seq = 0
    for socket in (carol_a, carol_b):
        removed = await socket.recv_until(frame_is("member", action="removed"))
        removed_seq = removed["seq"]
    secret = await bob.request(
        {"type": "message", "conversation_id": conversation, "body": "secret after carol left"}
    )
    assert secret["message"]["seq"] == removed_seq + 1
    for socket in (carol_a, carol_b):
        reply = await socket.request(
            {"type": "typing", "conversation_id": conversation, "is_typing": True}
        )
        assert (reply["type"], reply["code"]) == ("error", "not_participant")
        reply = await socket.request(
            {"type": "message", "conversation_id": conversation, "body": "still here?"}
        )
        assert (reply["type"], reply["code"]) == ("error", "not_participant")
    # A barrier after the secret, from the same socket, in a conversation carol is still in:
    # one instance publishes both in order, so once it reached her the secret would have too.
    abc = cluster.conversations["alice-bob-carol"]
    barrier = await bob.request({"type": "message", "conversation_id": abc, "body": "barrier"})
    for socket in (carol_a, carol_b):
        await socket.recv_until(
            lambda f: f.get("type") == "message" and f["message"]["id"] == barrier["message"]["id"]
        )
        after = [
            f
            for f in socket.frames
            if f.get("conversation_id") == conversation and f.get("seq", 0) > removed_seq
        ]
        assert after == []
