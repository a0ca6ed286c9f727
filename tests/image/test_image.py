"""The image as a user runs it: with no settings, as two instances behind HAProxy, and stopped.

What docs/deploy.md promises of the image is checked on the image itself, built by
``scripts/image`` and run by podman: a bare ``run`` serves the embedded default, every write
lands in the ``/data`` volume as the unprivileged user, instances on a shared Redis and
PostgreSQL carry a message between them (directly and through HAProxy), and SIGTERM closes
sockets with 1012 and exits 0.
"""

from __future__ import annotations

import json

import pytest

from realtime_project.close_codes import WS_1012_SERVICE_RESTART
from scripts import image as image_tool
from scripts.procs import wait_until
from tests.image.conftest import ImageDeployment, published_url
from tests.support.rest import rest_call
from tests.support.ws_client import WsClient, frame_is

# The first test of a session waits for the image to be built (minutes from nothing).
pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]

APP_UID = "10001"


def test_a_bare_run_serves_the_embedded_default(bare_container: image_tool.Container) -> None:
    body = bare_container.wait_healthy(published_url(bare_container))
    assert body["status"] == "healthy"
    assert body["checks"]["database"]["status"] == "up"
    # The image's own HEALTHCHECK agrees.
    assert image_tool.podman("healthcheck", "run", bare_container.name, check=False).returncode == 0
    # Not root, and what it wrote (the migrated SQLite file, the kept key) is its own, in /data.
    assert bare_container.exec("id", "-u").strip() == APP_UID
    owners = bare_container.exec("stat", "-c", "%n %u", "/data/db.sqlite3", "/data/.secret-key")
    assert owners.split() == ["/data/db.sqlite3", APP_UID, "/data/.secret-key", APP_UID]
    assert "cannot keep a SECRET_KEY" not in bare_container.logs()
    volumes = [m["Destination"] for m in bare_container.inspect()["Mounts"]]
    assert volumes == ["/data"]


async def test_sigterm_closes_sockets_with_1012_and_exits_0(
    bare_container: image_tool.Container,
) -> None:
    base_url = published_url(bare_container)
    bare_container.wait_healthy(base_url)
    demo = json.loads(bare_container.exec("python", "manage.py", "seed_demo", "--json"))
    alice = await WsClient.open(
        base_url.replace("http://", "ws://") + "/ws/", token=demo["users"]["alice"]["token"]
    )
    await alice.recv_until(frame_is("connected"))
    assert bare_container.stop(timeout=60) == 0
    assert await alice.wait_closed(within=5) == WS_1012_SERVICE_RESTART


async def test_a_message_crosses_from_one_container_to_the_other(
    image_deployment: ImageDeployment,
) -> None:
    deployment = image_deployment
    conversation = deployment.demo["conversations"]["alice-bob"]["id"]
    alice = await WsClient.open(deployment.ws_url(0), token=deployment.token("alice"))
    bob = await WsClient.open(deployment.ws_url(1), token=deployment.token("bob"))
    try:
        assert (await alice.recv_until(frame_is("connected")))["instance_id"] == "image-1"
        assert (await bob.recv_until(frame_is("connected")))["instance_id"] == "image-2"
        sent = await bob.request(
            {"type": "message", "conversation_id": conversation, "body": "across containers"}
        )
        received = await alice.recv_until(frame_is("message", conversation_id=conversation))
        assert received["message"] == sent["message"]
        for index in (0, 1):
            status, health = rest_call(
                deployment.base_url(index), "GET", "/api/health", token=deployment.token("alice")
            )
            assert (status, health["status"], health["checks"]["redis"]["status"]) == (
                200,
                "healthy",
                "up",
            )
    finally:
        await alice.close()
        await bob.close()


async def test_a_message_crosses_haproxy_between_the_containers(
    image_deployment: ImageDeployment,
) -> None:
    deployment = image_deployment
    balancer = deployment.balancer
    wait_until(
        lambda: set(balancer.server_states().values()) == {"UP"},
        timeout=30,
        what="both containers up in HAProxy",
    )
    conversation = deployment.demo["conversations"]["alice-bob"]["id"]
    alice = await WsClient.open(balancer.ws_url, token=deployment.token("alice"))
    opened = [alice]
    try:
        alice_on = (await alice.recv_until(frame_is("connected")))["instance_id"]
        # leastconn sends the next socket to the other instance; a few tries allow for a
        # socket of an earlier test still being counted.
        for _ in range(4):
            bob = await WsClient.open(balancer.ws_url, token=deployment.token("bob"))
            opened.append(bob)
            if (await bob.recv_until(frame_is("connected")))["instance_id"] != alice_on:
                break
        else:
            pytest.fail("HAProxy put every socket on one instance")
        sent = await bob.request(
            {"type": "message", "conversation_id": conversation, "body": "through HAProxy"}
        )
        received = await alice.recv_until(frame_is("message", conversation_id=conversation))
        assert received["message"] == sent["message"]
    finally:
        for socket in opened:
            await socket.close()
