"""Stores presence transitions, retries them through store outages, announces them.

See docs/presence.md. A transition that the store cannot take is kept (the newest per user)
and retried with exponential backoff until it lands; nothing is announced before it does.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

from presence.signals import presence_changed
from presence.store import (
    ACTIVE_STATUSES,
    PresenceStore,
    PresenceStoreError,
    PresenceWrite,
    StoredPresence,
)
from presence.webhooks import transition_hold
from realtime_project.conf import realtime_settings

logger = logging.getLogger(__name__)

RETRY_FIRST_SECONDS = 0.05


def _supersedes(new: PresenceWrite, old: PresenceWrite) -> bool:
    """Whether ``new`` replaces ``old`` in the retry queue.

    A reconnect ("online unless a status is set") must not erase an explicit status that is
    still waiting to be stored: that status is what the user asked for while connected.
    """
    if new.version <= old.version:
        return False
    return not (new.only_if_offline and old.status in ACTIVE_STATUSES)


@dataclass
class _Pending:
    change: PresenceWrite
    attempts: int
    next_try: float


class PresenceWriter:
    def __init__(self, store: PresenceStore, *, retry_max_seconds: float | None = None) -> None:
        self.store = store
        self._retry_max = retry_max_seconds
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self.writes = 0
        self.retries = 0

    @property
    def retry_max_seconds(self) -> float:
        if self._retry_max is not None:
            return self._retry_max
        return realtime_settings.PRESENCE_RETRY_MAX_SECONDS

    def pending_count(self) -> int:
        return len(self._pending)

    def is_behind(self) -> bool:
        return bool(self._pending)

    def pending_for(self, user_id: str) -> PresenceWrite | None:
        with self._lock:
            held = self._pending.get(user_id)
        return held.change if held else None

    async def apply(self, change: PresenceWrite) -> StoredPresence | None:
        """Store and announce ``change``; if the store is down, keep it for the retry loop.

        Returns the stored state if it was written now, None if it was skipped (a newer state
        is stored, or the condition did not hold) or deferred.
        """
        if self._hold_if_behind(change):
            return None  # the store is known to be down: do not make the caller wait on it
        return await self._attempt(change, attempts=0)

    def _hold_if_behind(self, change: PresenceWrite) -> bool:
        with self._lock:
            if not self._pending:
                return False
            held = self._pending.get(change.user_id)
            if held is None:
                self._pending[change.user_id] = _Pending(change, 0, time.monotonic())
            elif _supersedes(change, held.change):
                held.change = change
            return True

    async def _attempt(self, change: PresenceWrite, *, attempts: int) -> StoredPresence | None:
        hold = transition_hold(change)
        try:
            stored = await self.store.write(
                change, before_write=hold.take if hold is not None else None
            )
        except PresenceStoreError as exc:
            self._defer(change, attempts + 1, exc)
            return None
        if hold is not None:
            await hold.settle(landed=stored is not None)
        with self._lock:
            held = self._pending.get(change.user_id)
            if held is not None and held.change.version <= change.version:
                del self._pending[change.user_id]
        if stored is not None:
            self.writes += 1
            await self._announce(stored)
        return stored

    def _defer(self, change: PresenceWrite, attempts: int, exc: BaseException) -> None:
        delay = min(self.retry_max_seconds, RETRY_FIRST_SECONDS * (2 ** (attempts - 1)))
        delay *= random.uniform(0.5, 1.0)  # spread instances that failed together
        with self._lock:
            held = self._pending.get(change.user_id)
            if (
                held is not None
                and held.change is not change
                and not _supersedes(change, held.change)
            ):
                return
            self._pending[change.user_id] = _Pending(change, attempts, time.monotonic() + delay)
        if attempts == 1:
            logger.warning("presence: store unavailable (%s); will retry", exc)

    async def retry_due(self) -> int:
        """Retry every held transition whose backoff has passed; return how many landed."""
        now = time.monotonic()
        with self._lock:
            due = [p for p in self._pending.values() if p.next_try <= now]
        landed = 0
        for held in due:
            self.retries += 1
            before = self.pending_count()
            await self._attempt(held.change, attempts=held.attempts)
            with self._lock:
                still = self._pending.get(held.change.user_id)
            if still is None or still.change.version > held.change.version:
                landed += 1
            elif self.pending_count() >= before:
                # The store is still down: the rest would only wait on the same timeout.
                break
        return landed

    async def _announce(self, stored: StoredPresence) -> None:
        try:
            await presence_changed.asend(
                sender=None,
                user_id=stored.user_id,
                status=stored.status,
                last_seen=stored.last_seen,
                updated_at=stored.updated_at,
            )
        except Exception:
            # A receiver's failure must not make the stored transition look unstored.
            logger.exception("presence: a presence_changed receiver failed")
