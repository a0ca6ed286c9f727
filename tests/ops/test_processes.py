"""``PROCESSES=2``: one port, two Daphne processes, each an instance of its own
(realtime_project.runtime.processes, docs/scaling.md)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from scripts.deployment import Cluster
from scripts.procs import process_children
from tests.ops.support import health, open_sockets, registry_connections
from tests.support.async_poll import async_wait_until
from tests.support.ws_client import WsClient

pytestmark = pytest.mark.cluster


def _instance_of(pid: int) -> str:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for item in environ:
        if item.startswith(b"INSTANCE_ID="):
            return item.split(b"=", 1)[1].decode()
    return ""


def _answering(cluster: Cluster, seen: set[str]) -> set[str]:
    """The instance ids that answered health, each request on a new connection."""
    (instance,) = cluster.instances
    status, body = health(instance.base_url)
    if status == 200:
        seen.add(str(body.get("instance_id")))
    return seen


async def test_two_processes_serve_one_port_and_a_crashed_one_comes_back(
    start_cluster,
) -> None:
    cluster = start_cluster(instances=1, PROCESSES="2")
    (instance,) = cluster.instances
    children = process_children(instance.pid)
    assert sorted(_instance_of(pid) for pid in children) == ["instance-1-p0", "instance-1-p1"]

    # Both answer on the instance's one port.
    seen: set[str] = set()
    await async_wait_until(
        lambda: _answering(cluster, seen) >= {"instance-1-p0", "instance-1-p1"},
        timeout=15,
        interval=0.05,
        what="both processes answering health",
    )

    # A crashed process is started again under a new instance id; the port keeps serving.
    crashed = next(pid for pid in children if _instance_of(pid) == "instance-1-p0")
    os.kill(crashed, signal.SIGKILL)
    seen.clear()
    await async_wait_until(
        lambda: "instance-1-p0r1" in _answering(cluster, seen),
        timeout=20,
        interval=0.05,
        what="the crashed process serving again as instance-1-p0r1",
    )
    assert "instance-1-p0" not in {_instance_of(pid) for pid in process_children(instance.pid)}


async def test_sigterm_drains_every_process_and_the_instance_exits(start_cluster) -> None:
    cluster = start_cluster(instances=1, PROCESSES="2")
    (instance,) = cluster.instances
    sockets: list[WsClient] = []
    try:
        # Sockets until both processes hold some (the kernel picks who accepts each); at most
        # 10 each of 3 users, under MAX_SOCKETS_PER_USER.
        for n in range(30):
            name = ("alice", "bob", "carol")[n % 3]
            sockets += await open_sockets(cluster, (name, instance))
            held = registry_connections(cluster)
            if len(held) == 2:
                break
        assert set(registry_connections(cluster)) == {"instance-1-p0", "instance-1-p1"}

        started = time.monotonic()
        instance.signal(signal.SIGTERM)
        for socket in sockets:
            assert await socket.wait_closed(within=15) == 1012
        await async_wait_until(lambda: not instance.alive(), timeout=15, what="the instance exit")
        assert instance.proc is not None
        assert instance.proc.returncode == 0
        # DRAIN_DELAY_SECONDS (1.5 s in these tests) and the closes, not a timeout's kill.
        assert time.monotonic() - started < 10
    finally:
        for socket in sockets:
            await socket.close()


async def test_a_killed_instance_takes_every_process_with_it(start_cluster) -> None:
    cluster = start_cluster(instances=1, PROCESSES="2")
    (instance,) = cluster.instances
    children = process_children(instance.pid)
    assert len(children) == 2
    os.kill(instance.pid, signal.SIGKILL)  # the supervisor alone: nothing forwarded
    await async_wait_until(
        lambda: not any(_alive(pid) for pid in children),
        timeout=10,
        what="both processes gone with the supervisor",
    )
    assert health(instance.base_url)[0] == 0  # nobody answers on the port


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
