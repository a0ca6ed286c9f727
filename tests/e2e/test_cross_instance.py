"""Sockets on two real Daphne instances over real Redis and the real Firestore emulator.

What a user sees when their peers sit on another instance, when they have sockets on both,
when they reconnect, when an instance dies under them, and when Firestore goes away a while.
"""

from __future__ import annotations

import time

import pytest
import websockets

from realtime_project.close_codes import WS_1009_MESSAGE_TOO_BIG
from tests.support.async_poll import async_wait_until
from tests.support.cluster import E2ECluster, Sockets
from tests.support.ws_client import WsClient, frame_is

pytestmark = [pytest.mark.cluster, pytest.mark.redis, pytest.mark.firestore]


async def test_peer_on_the_other_instance_sees_typing_messages_reads_and_presence(
    cluster: E2ECluster, sockets: Sockets
) -> None:
    ab = cluster.conversations["alice-bob"]
    alice_id, bob_id = cluster.user("alice").id, cluster.user("bob").id
    alice = await sockets.open("alice", on=cluster.a)
    bob = await sockets.open("bob", on=cluster.b)

    ack = await bob.request({"type": "typing", "conversation_id": ab, "is_typing": True})
    assert ack["is_typing"] is True
    typing = await alice.recv_until(frame_is("typing", user_id=bob_id))
    assert (typing["conversation_id"], typing["is_typing"]) == (ab, True)

    sent = await bob.request({"type": "message", "conversation_id": ab, "body": "from B"})
    message = await alice.recv_until(frame_is("message", conversation_id=ab))
    assert message["message"] == sent["message"]

    read_ack = await alice.request(
        {"type": "read", "conversation_id": ab, "message_ids": [sent["message"]["id"]]}
    )
    read = await bob.recv_until(frame_is("read", user_id=alice_id))
    assert read["message_ids"] == [sent["message"]["id"]]
    assert read["read_at"] == read_ack["read_at"]

    # The ack waits for the store's answer (or its timeout, PRESENCE_STORE_TIMEOUT_SECONDS for
    # each of the write's read and update), so that a status read right after it is the new one.
    await bob.request({"type": "status", "status": "away"}, within=10)
    # Announced once Firestore has stored it: the emulator's transactions take seconds under
    # load (FINDINGS), more than the other events' bound.
    presence = await alice.recv_until(
        frame_is("presence", user_id=bob_id, status="away"), within=15
    )
    assert "last_seen" in presence

    # Bob's own frames came back to him only as acks: alice's typing is the first he sees.
    await alice.request({"type": "typing", "conversation_id": ab, "is_typing": True})
    assert (await bob.recv_until(frame_is("typing")))["user_id"] == alice_id
    assert bob.unconsumed(frame_is("message")) == []


async def test_user_with_sockets_on_both_instances(cluster: E2ECluster, sockets: Sockets) -> None:
    abc = cluster.conversations["alice-bob-carol"]
    alice_id = cluster.user("alice").id
    alice_a = await sockets.open("alice", on=cluster.a)
    alice_b = await sockets.open("alice", on=cluster.b)
    carol = await sockets.open("carol", on=cluster.a)

    status, info = cluster.api("GET", "/api/connections/info", user="alice", on=cluster.a)
    assert status == 200
    assert info["connection_count"] == 2
    assert {c["instance_id"] for c in info["connections"]} == {
        cluster.a.instance_id,
        cluster.b.instance_id,
    }

    sent = await carol.request({"type": "message", "conversation_id": abc, "body": "to both"})
    for socket in (alice_a, alice_b):
        event = await socket.recv_until(frame_is("message", conversation_id=abc))
        assert event["message"]["id"] == sent["message"]["id"]

    await alice_a.request({"type": "typing", "conversation_id": abc, "is_typing": True})
    await alice_b.recv_until(frame_is("typing", user_id=alice_id))
    await carol.request({"type": "typing", "conversation_id": abc, "is_typing": True})
    # alice_a's first typing event is carol's: her own never came back to her.
    first = await alice_a.recv_until(frame_is("typing"))
    assert first["user_id"] == cluster.user("carol").id
    for socket in (alice_a, alice_b):
        copies = [f for f in socket.frames if f.get("event_id") == event["event_id"]]
        assert len(copies) == 1


async def test_reconnect_within_grace_writes_nothing_to_firestore(
    cluster: E2ECluster, sockets: Sockets
) -> None:
    carol_id, admin_id = cluster.user("carol").id, cluster.user("admin").id
    carol = await sockets.open("carol", on=cluster.a)
    admin = await sockets.open("admin", on=cluster.a)
    online = await async_wait_until(
        lambda: (doc := cluster.presence_document(carol_id)) and doc.status == "online" and doc,
        timeout=10,
        what="carol online in Firestore",
    )
    await async_wait_until(
        lambda: (doc := cluster.presence_document(admin_id)) and doc.status == "online",
        timeout=10,
        what="admin online in Firestore",
    )
    await carol.close()
    await admin.close()
    await sockets.open("carol", on=cluster.b)
    # Admin, who left at the same moment and stayed away, marks when the grace has run out.
    await async_wait_until(
        lambda: (doc := cluster.presence_document(admin_id)) and doc.status == "offline",
        timeout=10,
        what="admin offline after the grace period",
    )
    after = cluster.presence_document(carol_id)
    assert after is not None
    assert after.status == "online"
    assert after.update_time == online.update_time


async def test_killed_instance_is_reaped_and_its_user_goes_offline(
    cluster: E2ECluster, sockets: Sockets
) -> None:
    bob_id = cluster.user("bob").id
    alice = await sockets.open("alice", on=cluster.a)
    await sockets.open("bob", on=cluster.b)
    await async_wait_until(
        lambda: (doc := cluster.presence_document(bob_id)) and doc.status == "online",
        timeout=10,
        what="bob online in Firestore",
    )
    killed_at = time.monotonic()
    cluster.b.kill()

    def bob_connection_count() -> int:
        status, info = cluster.api("GET", "/api/connections/info", user="bob", on=cluster.a)
        assert status == 200
        return int(info["connection_count"])

    # The lease (CONNECTION_TTL_SECONDS=2) lapses, then the survivor's reaper runs.
    await async_wait_until(
        lambda: bob_connection_count() == 0, timeout=6, what="bob's dead socket reaped"
    )
    reaped_after = time.monotonic() - killed_at
    offline = await async_wait_until(
        lambda: (doc := cluster.presence_document(bob_id)) and doc.status == "offline" and doc,
        timeout=8,
        what="bob offline in Firestore",
    )
    offline_after = time.monotonic() - killed_at
    assert offline.last_seen is not None
    await alice.recv_until(frame_is("presence", user_id=bob_id, status="offline"), within=5)
    print(f"reaped after {reaped_after:.2f}s, offline after {offline_after:.2f}s")
    assert reaped_after < 6
    assert offline_after < 8


async def test_firestore_down_and_back_ends_in_the_right_state(
    cluster: E2ECluster, sockets: Sockets
) -> None:
    carol_id = cluster.user("carol").id
    carol = await sockets.open("carol", on=cluster.a)
    await async_wait_until(
        lambda: (doc := cluster.presence_document(carol_id)) and doc.status == "online",
        timeout=10,
        what="carol online in Firestore",
    )
    firestore = cluster.cluster.firestore
    assert firestore is not None
    firestore.stop()
    # The socket keeps working and the status change is acknowledged while Firestore is away.
    ack = await carol.request({"type": "status", "status": "busy"}, within=10)
    assert (ack["type"], ack["status"]) == ("ack", "busy")
    assert (await carol.request({"type": "ping"}))["type"] == "pong"
    firestore.start()
    # The emulator comes back empty; the pending write lands once it answers again.
    await async_wait_until(
        lambda: (doc := cluster.presence_document(carol_id)) and doc.status == "busy",
        timeout=20,
        interval=0.2,
        what="carol busy in Firestore after it came back",
    )


async def test_real_handshake_refuses_a_foreign_origin(cluster: E2ECluster) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await WsClient.open(
            cluster.a.ws_url, token=cluster.user("alice").token, origin="https://evil.example"
        )
    assert refused.value.response.status_code == 403


async def test_oversized_frame_closes_1009_on_a_real_instance(
    cluster: E2ECluster, sockets: Sockets
) -> None:
    alice = await sockets.open("alice", on=cluster.a)
    await alice.send({"type": "ping", "ref": "big", "pad": "x" * (64 * 1024)})
    assert await alice.wait_closed() == WS_1009_MESSAGE_TOO_BIG


async def test_stale_typing_expires_across_instances(cluster: E2ECluster, sockets: Sockets) -> None:
    ab = cluster.conversations["alice-bob"]
    bob_id = cluster.user("bob").id
    alice = await sockets.open("alice", on=cluster.a)
    bob = await sockets.open("bob", on=cluster.b)
    await bob.request({"type": "typing", "conversation_id": ab, "is_typing": True})
    await alice.recv_until(frame_is("typing", user_id=bob_id, is_typing=True))
    await bob.close()
    await alice.recv_until(frame_is("typing", user_id=bob_id, is_typing=False), within=5)
