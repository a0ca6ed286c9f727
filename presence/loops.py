"""Presence's background loops, run by ``connections.instance``. See docs/presence.md."""

from __future__ import annotations

import asyncio
import logging

from connections.instance import register_background_task, register_reap_listener
from presence.reconcile import presence_reconcile
from presence.services import get_presence
from presence.webhooks import HELD_SETTLE_AFTER_SECONDS, held_settle
from realtime_project.conf import realtime_settings

logger = logging.getLogger(__name__)


async def deadline_loop() -> None:
    """Claim due offline deadlines, on every instance (each deadline is claimed once)."""
    while True:
        try:
            while await get_presence().process_due() > 0:
                pass  # a full batch may mean more are due
        except Exception as exc:
            logger.debug("presence: deadline loop could not run (%r)", exc)
        await asyncio.sleep(realtime_settings.PRESENCE_DEADLINE_POLL_SECONDS)


async def retry_loop() -> None:
    """Retry transitions the store could not take, with the writer's backoff."""
    while True:
        try:
            await get_presence().retry_pending()
        except Exception:
            logger.exception("presence: retry loop failed")
        poll = realtime_settings.PRESENCE_DEADLINE_POLL_SECONDS
        await asyncio.sleep(min(poll, realtime_settings.PRESENCE_RETRY_MAX_SECONDS))


async def reconcile_loop() -> None:
    while True:
        await asyncio.sleep(realtime_settings.PRESENCE_RECONCILE_SECONDS)
        try:
            scheduled = await presence_reconcile(service=get_presence())
            if scheduled:
                logger.info(
                    "presence: reconciliation scheduled %d offline deadlines", len(scheduled)
                )
        except Exception as exc:
            logger.warning("presence: reconciliation could not run (%r)", exc)


async def webhook_settle_loop() -> None:
    """Settle presence webhooks whose writer died between the outbox and Firestore."""
    while True:
        await asyncio.sleep(HELD_SETTLE_AFTER_SECONDS / 4)
        try:
            await held_settle(store=get_presence().store)
        except Exception as exc:
            logger.warning("presence: settling held webhooks could not run (%r)", exc)


async def on_instances_reaped(user_ids: list[str]) -> None:
    await get_presence().users_lost(user_ids)


def register_presence_tasks() -> None:
    register_background_task(deadline_loop, name="presence-deadlines")
    register_background_task(retry_loop, name="presence-retry")
    register_background_task(reconcile_loop, name="presence-reconcile")
    register_background_task(webhook_settle_loop, name="presence-webhooks")
    register_reap_listener(on_instances_reaped)
