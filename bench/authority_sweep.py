"""The cost of one authority sweep (docs/auth.md): every socket of an instance re-checked.

Seeds ``--sockets`` users, each with a token (``--session-share`` of them hold a session
socket instead), in the database named by ``DATABASE_URL`` (migrated first), puts one socket
per user into an ``AuthorityWatch`` and times ``sweep()`` (the database read and the
comparison, as the instance runs it every ``TOKEN_RECHECK_SECONDS``). The seeded rows are
deleted afterwards.

Run: DATABASE_URL=postgres://... .venv/bin/python -m bench.authority_sweep [--sockets 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from datetime import timedelta
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")


def seed(count: int, session_share: float, prefix: str) -> list[dict[str, Any]]:
    from django.contrib.auth import SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from accounts.models import AuthToken, token_digest
    from accounts.tokens import tokens_issue_bulk

    user_model = get_user_model()
    user_model.objects.bulk_create(
        [user_model(username=f"{prefix}{i}", password="!") for i in range(count)],
        batch_size=2000,
    )
    users = list(
        user_model.objects.filter(username__startswith=prefix).values_list("pk", "password")
    )
    keys = tokens_issue_bulk(user_ids=[pk for pk, _ in users])
    sessions_from = int(len(users) * (1 - session_share))
    expire = timezone.now() + timedelta(hours=1)
    session_rows = []
    sockets: list[dict[str, Any]] = []
    ids = dict(
        AuthToken.objects.filter(user__username__startswith=prefix).values_list("user_id", "id")
    )
    for index, (pk, password) in enumerate(users):
        if index < sessions_from:
            digest = token_digest(keys[pk])
            sockets.append({"user_id": str(pk), "digest": digest, "token_id": ids[pk]})
        else:
            key = uuid.uuid4().hex
            data = SessionStore().encode({SESSION_KEY: str(pk)})
            session_rows.append(Session(session_key=key, session_data=data, expire_date=expire))
            sockets.append({"user_id": str(pk), "session_key": key, "password": password})
    Session.objects.bulk_create(session_rows, batch_size=2000)
    return sockets


def unseed(prefix: str, sockets: list[dict[str, Any]]) -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.models import Session

    from accounts.models import AuthToken

    keys = [s["session_key"] for s in sockets if "session_key" in s]
    for start in range(0, len(keys), 500):
        Session.objects.filter(session_key__in=keys[start : start + 500])._raw_delete("default")
    users = get_user_model().objects.filter(username__startswith=prefix)
    AuthToken.objects.filter(user__in=users)._raw_delete("default")
    users._raw_delete("default")


async def measure(sockets: list[dict[str, Any]], runs: int) -> tuple[list[float], list[float]]:
    from django.utils import timezone

    from accounts.authority import (
        SCOPE_KEY,
        SESSION_SCOPE_KEY,
        AuthorityWatch,
        SocketAuthorityMixin,
    )
    from accounts.sessions import SessionIdentity, session_digest
    from accounts.tokens import TokenIdentity

    class Socket(SocketAuthorityMixin):
        def __init__(self, user_id: str, scope: dict[str, Any]) -> None:
            self.user_id = user_id
            self.scope = scope

        async def server_close(self, *, code: int) -> None:
            raise AssertionError("a valid socket was closed")

    watch = AuthorityWatch()
    expires = timezone.now() + timedelta(days=1)
    for number, spec in enumerate(sockets):
        scope: dict[str, object]
        if "digest" in spec:
            token = TokenIdentity(
                digest=spec["digest"], expires_at=expires, token_id=spec["token_id"]
            )
            scope = {SCOPE_KEY: token}
        else:
            key = spec["session_key"]
            session = SessionIdentity(
                session_key=key, digest=session_digest(key), password=spec["password"]
            )
            scope = {SESSION_SCOPE_KEY: session}
        # The watch's own table, without starting its periodic task: only sweep() is timed.
        watch._sockets[number] = Socket(spec["user_id"], scope)
    # The longest the event loop was held in one piece while sweeps ran: what a sweep can
    # add to any other socket's frame.
    stalls: list[float] = []
    running = True

    async def ticker() -> None:
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0)
            now = time.perf_counter()
            stalls.append(now - last)
            last = now

    await _timed(watch)  # the first opens the database connection
    ticking = asyncio.get_running_loop().create_task(ticker())
    started = time.perf_counter()
    timings = [await _timed(watch) for _ in range(runs)]
    elapsed = time.perf_counter() - started
    running = False
    await ticking
    with_sweeps = max(stalls)
    # The same machine's noise: the ticker alone for as long.
    stalls.clear()
    running = True
    ticking = asyncio.get_running_loop().create_task(ticker())
    await asyncio.sleep(elapsed)
    running = False
    await ticking
    return timings, [with_sweeps, max(stalls)]


async def _timed(watch: Any) -> float:
    started = time.perf_counter()
    closed = await watch.sweep()
    assert closed == 0
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--session-share", type=float, default=0.2)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from realtime_project.runtime.collector import collector_tune

    call_command("migrate", verbosity=0)
    prefix = f"sweep-{uuid.uuid4().hex[:8]}-"
    sockets = seed(args.sockets, args.session_share, prefix)
    collector_tune()  # as an instance does once started
    try:
        timings, in_loop = asyncio.run(measure(sockets, args.runs))
    finally:
        unseed(prefix, sockets)
    print(
        f"{connection.vendor}: {args.sockets} sockets ({args.session_share:.0%} sessions), "
        f"{args.runs} sweeps: {_summary(timings)}; longest hold of the event loop "
        f"{in_loop[0] * 1000:.1f} ms (idle loop, same span: {in_loop[1] * 1000:.1f} ms)"
    )


def _summary(seconds: list[float]) -> str:
    ms = sorted(t * 1000 for t in seconds)
    return f"median {statistics.median(ms):.1f} ms (min {ms[0]:.1f}, max {ms[-1]:.1f})"


if __name__ == "__main__":
    main()
