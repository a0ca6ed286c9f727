"""The reconnect storm at a tiny size on a real 2-instance cluster.

What a user would see when the instance holding their socket is SIGKILLed: their client (the
project's client package) comes back on the survivor and resumes, and every message their
partner sent meanwhile reaches them exactly once; straight to the survivor, or through
HAProxy (``--via-haproxy``), which must find the survivor for them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.e2e.storm import storm
from scripts.procs import ServiceUnavailable
from tests.support.services import service_unavailable

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

USERS = 40


@pytest.mark.parametrize("via_haproxy", [False, True], ids=["direct", "via-haproxy"])
async def test_killed_instances_clients_come_back_and_miss_nothing(
    tmp_path: Path, via_haproxy: bool
) -> None:
    args = argparse.Namespace(
        via_haproxy=via_haproxy,
        storm_users=USERS,
        storm_ping_rate=20.0,
        storm_message_rate=10.0,
        storm_calm=1.0,
        storm_deadline=60.0,
        database_url=None,
        profile=None,
    )
    try:
        result = await storm(args, tmp_path)
    except ServiceUnavailable as exc:
        service_unavailable(str(exc))

    assert result["via_haproxy"] is via_haproxy
    assert result["sockets"] == USERS
    assert result["killed_sockets"] == USERS // 2
    assert result["resumed"] == USERS // 2
    assert result["recovered_all"] is True
    # Every killed client tried at least once; each attempt's outcome is counted.
    assert result["attempts"] >= USERS // 2
    assert sum(result["attempt_outcomes"].values()) <= result["attempts"] - result["resumed"]
    assert result["messages_sent_during"] > 0
    # The survivor is pinged from the storm's process and from one of its own, before the kill.
    assert result["survivor_ping_ms"]["before"]["pings"] > 0
    assert result["survivor_ping_ms_own_process"]["before"]["pings"] > 0
    tally = result["integrity"]
    assert tally["expected"] > 0
    assert (tally["lost"], tally["unacked"]) == (0, 0)
    assert (tally["duplicate_events"], tally["duplicate_messages"]) == (0, 0)
    assert result["mass_close"]["entries_left"] == 0
