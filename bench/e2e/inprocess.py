"""The application in this process, on a SQLite file and a real redis-server, for the
measurements that look inside it (``socket_memory``, ``round_trips``)."""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

from scripts.procs import manage


def inprocess_env(tmp: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The settings of an in-process instance (no Firestore: presence stays in memory)."""
    return {
        "DJANGO_SETTINGS_MODULE": "realtime_project.settings",
        "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3",
        "REDIS_URL": redis_url,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def inprocess_seed(env: dict[str, str], *, users: int) -> dict[str, Any]:
    """Migrate, seed ``users`` with tokens, and make ``env`` this process's environment."""
    manage("migrate", "--noinput", env=env)
    seeded: dict[str, Any] = json.loads(
        manage("bench_seed", "--users", str(users), "--json", env=env)
    )
    os.environ.update(env)
    os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
    os.environ.pop("FIRESTORE_PROJECT_ID", None)
    return seeded


async def socket_open(application: Any, token: str) -> Any:
    """A connected socket on ``application`` (a ``WebsocketCommunicator``), past ``connected``."""
    from channels.testing import WebsocketCommunicator

    communicator = WebsocketCommunicator(application, f"/ws/?token={token}")
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    frame = json.loads(await communicator.receive_from(timeout=10))
    assert frame["type"] == "connected", frame
    return communicator
