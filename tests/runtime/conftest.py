"""One real Daphne instance behind a real HAProxy, with small runtime bounds (module-scoped).

The instance holds at most ``MAX_BUFFERED_BYTES`` unsent for one socket and lets a socket send
frames fast (the slow-consumer test floods from a second socket); everything else is the
default, ``TRUSTED_PROXIES`` included (loopback: HAProxy runs on 127.0.0.1). Clients that must
not look like the proxy connect from ``CLIENT_ADDRESS``, another loopback address.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.deployment import Cluster
from tests.support.services import service_running

MAX_BUFFERED_BYTES = 256 * 1024
# Not in TRUSTED_PROXIES, yet a local address: Linux answers all of 127.0.0.0/8.
CLIENT_ADDRESS = "127.0.0.2"

RUNTIME_ENV = {
    "WS_MAX_BUFFERED_BYTES": str(MAX_BUFFERED_BYTES),
    # A reader that stopped is told from a slow one after this long without progress; while
    # it waits, the socket's layer queue holds what is sent to it (60 KB messages here).
    "WS_SEND_STALL_SECONDS": "1",
    # A stalled reader's layer queue fills at 100 messages (6 MB here) and it is closed 4008,
    # however fast the machine sends: at the default 1,000 what it holds is whatever the
    # instance delivers within the stall's second, which grows with the machine's speed.
    "CHANNEL_CAPACITY": "100",
    "RATE_LIMIT_FRAMES_PER_SECOND": "2000",
    "RATE_LIMIT_BURST": "2000",
    # Big messages fill a socket's buffers in a few dozen messages, at any database speed.
    "MESSAGE_MAX_LENGTH": "60000",
    "HEARTBEAT_INTERVAL_SECONDS": "0.5",
    "HEALTH_CACHE_SECONDS": "0.1",
    "LOG_LEVEL": "WARNING",
}


@pytest.fixture(scope="module")
def runtime_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state_dir: Path = tmp_path_factory.mktemp("runtime-cluster")
    cluster = Cluster(
        instances=1,
        state_dir=state_dir,
        env=RUNTIME_ENV,
        with_firestore=False,
        database_url=os.environ.get("DATABASE_URL"),
    )
    with service_running(cluster):
        yield cluster
