"""``user.online`` / ``user.offline`` webhooks for stored presence. See docs/webhooks.md.

Presence lives in Firestore, the outbox in the SQL database: no transaction spans both. The
instance whose write is about to land holds the event in the outbox first (``held``, never
sent), writes Firestore, then releases it, or discards it when the write did not apply. A
crash between the two leaves a held event; ``held_settle`` (a loop on every instance) reads
the stored state and releases the event if its transition is what is stored, so nothing that
landed goes unannounced and nothing that did not land is announced. The event id is derived
from the transition's version, so a retried write holds the same event, never a second one.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from presence.store import PresenceStore, PresenceStoreError, PresenceWrite
from realtime_project.database import database_async
from webhooks.outbox import (
    outbox_discard,
    outbox_held,
    outbox_hold_once,
    outbox_release,
    webhooks_enabled,
)

logger = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("6f1d3a52-8c1e-4d7e-9b1a-2f57d0e3c9a4")
# A held event older than this is settled from the stored state (its writer died, or is
# still retrying through an outage: then its own release comes later and finds it gone,
# which only means holding it again).
HELD_SETTLE_AFTER_SECONDS = 60.0


def transition_event(change: PresenceWrite) -> str | None:
    """The webhook a change announces when it lands, if any.

    An ``only_if_offline`` write lands only over a stored offline (or no) state: the first
    socket. An offline write is the grace period's end. A status the user picks while
    connected is neither.
    """
    if change.status == "offline":
        return "user.offline"
    if change.only_if_offline:
        return "user.online"
    return None


_hold = database_async(outbox_hold_once)
_release = database_async(outbox_release)
_discard = database_async(outbox_discard)
_held = database_async(outbox_held)


@dataclass
class TransitionHold:
    """The held webhook of one presence write attempt."""

    change: PresenceWrite
    name: str
    taken: bool = field(default=False)

    @property
    def event_id(self) -> uuid.UUID:
        return uuid.uuid5(_NAMESPACE, f"{self.change.user_id}:{self.change.version}")

    async def take(self) -> None:
        """Hold the event; the database being unreachable fails the write (it is retried)."""
        try:
            await _hold(
                event_id=self.event_id,
                name=self.name,
                payload={"user_id": self.change.user_id, "at": self.change.updated_at.isoformat()},
                stream=f"user:{self.change.user_id}",
            )
        except Exception as exc:
            raise PresenceStoreError(f"webhook outbox unavailable: {exc!r}") from exc
        self.taken = True

    async def settle(self, *, landed: bool) -> None:
        if not self.taken:
            return
        try:
            await (_release if landed else _discard)(event_id=self.event_id)
        except Exception:
            # Left held: held_settle decides from the stored state.
            logger.warning("presence: could not settle webhook %s", self.event_id, exc_info=True)


def transition_hold(change: PresenceWrite) -> TransitionHold | None:
    if not webhooks_enabled():
        return None
    name = transition_event(change)
    return TransitionHold(change, name) if name is not None else None


async def held_settle(*, store: PresenceStore, now: datetime | None = None) -> int:
    """Settle held events left behind by a writer that died; the number settled."""
    if not webhooks_enabled():
        return 0
    now = now or datetime.now(UTC)
    held = await _held(older_than=now - timedelta(seconds=HELD_SETTLE_AFTER_SECONDS))
    if not held:
        return 0
    stored = await store.get_many(sorted({str(payload["user_id"]) for _, payload in held}))
    settled = 0
    for event_id, payload in held:
        state = stored.get(str(payload["user_id"]))
        at = datetime.fromisoformat(str(payload["at"]))
        if state is not None and state.updated_at == at:
            await _release(event_id=event_id)
        else:
            # Never stored, or overtaken by a newer transition that announces itself.
            await _discard(event_id=event_id)
        settled += 1
    return settled
