"""The sender loop: every instance runs one; batches are leased, so each goes out once at a time.

See docs/webhooks.md. One pass: check the recipients of new ``message.offline`` events against
the connection registry (one batched look-up), then per URL claim a batch, POST it signed,
and record the outcome. The database is the only shared state: Redis being down delays
nothing (the registry then answers from this instance's own sockets).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from connections.instance import register_background_task
from connections.registry import ConnectionRegistry, get_registry
from realtime_project.conf import realtime_settings
from realtime_project.database import database_async
from webhooks import delivery, metrics
from webhooks.signing import SIGNATURE_HEADER, batch_body, signature

logger = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class CallResult:
    ok: bool
    status: int | None
    error: str | None = None


def http_post(*, url: str, body: bytes, headers: dict[str, str], timeout: float) -> CallResult:
    """One POST, blocking (run on a thread); any 2xx is success, anything else a failure."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
            response.read()
    except urllib.error.HTTPError as exc:
        exc.close()
        return CallResult(ok=False, status=exc.code)
    except (OSError, ValueError) as exc:
        return CallResult(ok=False, status=None, error=repr(exc))
    return CallResult(ok=200 <= status < 300, status=status)


_claim = database_async(delivery.batch_claim)
_delivered = database_async(delivery.batch_delivered)
_failed = database_async(delivery.batch_failed)
_unresolved = database_async(delivery.unresolved_events)
_resolved = database_async(delivery.events_resolved)
_stats = database_async(delivery.outbox_stats)


@dataclass
class WebhookSender:
    """One instance's sender; tests build one with their own clock and registry."""

    clock: Callable[[], datetime] = _utcnow
    registry: Callable[[], ConnectionRegistry] = get_registry
    post: Callable[..., CallResult] = http_post
    sent_batches: int = field(default=0)

    async def resolve_offline(self) -> int:
        """Keep only candidates with no live socket; one registry look-up for all events."""
        pending = await _unresolved(limit=realtime_settings.WEBHOOK_BATCH_SIZE)
        if not pending:
            return 0
        users = sorted({uid for ids in pending.values() for uid in ids})
        counts = await self.registry().users_connection_counts(users) if users else {}
        offline = {
            event_id: [uid for uid in ids if counts.get(uid, 0) == 0]
            for event_id, ids in pending.items()
        }
        await _resolved(offline=offline)
        return len(pending)

    async def send_one(self, target: str) -> bool:
        """Claim and send one batch for ``target``; False when nothing was due."""
        batch = await _claim(
            target=target,
            now=self.clock(),
            size=realtime_settings.WEBHOOK_BATCH_SIZE,
            lease_seconds=realtime_settings.WEBHOOK_LEASE_SECONDS,
        )
        if batch is None:
            return False
        body = batch_body(batch_id=str(batch.batch_id), at=self.clock(), events=batch.events)
        secret = realtime_settings.WEBHOOK_SECRET or ""
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(body=body, secret=secret),
        }
        result = await asyncio.to_thread(
            self.post,
            url=target,
            body=body,
            headers=headers,
            timeout=realtime_settings.WEBHOOK_TIMEOUT_SECONDS,
        )
        self.sent_batches += 1
        if result.ok:
            metrics.events_delivered(await _delivered(batch=batch))
            return True
        metrics.call_failed()
        expired = await _failed(
            batch=batch,
            now=self.clock(),
            max_age_seconds=realtime_settings.WEBHOOK_MAX_AGE_SECONDS,
            base_seconds=realtime_settings.WEBHOOK_BACKOFF_BASE_SECONDS,
            cap_seconds=realtime_settings.WEBHOOK_BACKOFF_MAX_SECONDS,
        )
        if expired:
            metrics.events_expired(expired)
            logger.warning(
                "webhooks: %d events to %s expired after %d attempts",
                expired,
                target,
                batch.attempts + 1,
            )
        elif batch.attempts == 0:
            logger.warning(
                "webhooks: %s failed (%s); retrying with backoff",
                target,
                result.status or result.error,
            )
        return True

    async def run_once(self) -> int:
        """One pass over every URL; the number of calls made."""
        await self.resolve_offline()
        calls = 0
        for target in realtime_settings.WEBHOOK_URLS:
            calls += await self.send_one(target)
        return calls

    async def observe(self) -> None:
        stats = await _stats(now=self.clock())
        metrics.backlog_observed(
            pending=stats["pending"], oldest_age_seconds=stats["oldest_pending_age_seconds"]
        )


async def sender_loop(sender: WebhookSender | None = None) -> None:
    """Send while there is work, poll while there is none; started with the instance."""
    if not realtime_settings.WEBHOOK_URLS:
        return
    sender = sender or WebhookSender()
    passes = 0
    while True:
        try:
            busy = await sender.run_once()
            passes += 1
            if passes % 20 == 1 or not busy:
                await sender.observe()
        except Exception:
            logger.exception("webhooks: sender pass failed")
            busy = 0
        if not busy:
            await asyncio.sleep(realtime_settings.WEBHOOK_POLL_SECONDS)


def register_sender_task() -> None:
    register_background_task(sender_loop, name="webhooks-sender")
