"""Fixtures for webhook tests: a local receiver, the settings that point at it, a clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.webhook_receiver import WebhookReceiver

SECRET = "test-webhook-secret"


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    started = WebhookReceiver(secret=SECRET).start()
    yield started
    started.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC))


@pytest.fixture
def webhooks_on(settings: Any, receiver: WebhookReceiver) -> Callable[..., None]:
    """Webhooks to ``receiver``; ``webhooks_on(WEBHOOK_BATCH_SIZE=2)`` changes other knobs."""

    def apply(**values: Any) -> None:
        settings.REALTIME = {
            **settings.REALTIME,
            "WEBHOOK_URLS": [receiver.url],
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_TIMEOUT_SECONDS": 2.0,
            "WEBHOOK_LEASE_SECONDS": 5.0,
            **values,
        }

    apply()
    return apply
