"""Reconciliation: nobody stays online forever when deadlines were lost. See docs/presence.md.

Deadlines live in Redis and go with it when Redis loses its data (or with an instance that
claimed one and died before writing). Periodically, the users stored as online/away/busy are
checked against the registry; those without a socket get a deadline, unless one is pending.
The deadline loop re-checks the registry before writing, so a user whose instance has not yet
re-registered after a Redis loss is not marked offline as long as the grace is longer than a
heartbeat interval.
"""

from __future__ import annotations

import time

from presence.services import PresenceService

RECONCILE_BATCH = 500


async def presence_reconcile(
    *, service: PresenceService, limit: int = RECONCILE_BATCH
) -> list[str]:
    """Schedule the missing offline deadlines; return the users that got one."""
    active = await service.store.active_user_ids(limit=limit)
    if not active:
        return []
    counts = await service.registry.users_connection_counts(active)
    deadline = time.time() + service.grace_seconds
    scheduled: list[str] = []
    for uid in active:
        if counts.get(uid, 0) == 0 and await service.deadlines.pending(uid) is None:
            await service.deadlines.schedule(uid, deadline, only_if_absent=True)
            scheduled.append(uid)
    return scheduled
