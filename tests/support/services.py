"""What a test does when a real service it needs cannot be started."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def service_unavailable(reason: str) -> NoReturn:
    """Fail on CI (a missing service there is a broken build), skip with the reason elsewhere."""
    if on_ci():
        pytest.fail(f"required service unavailable on CI: {reason}")
    pytest.skip(reason)
