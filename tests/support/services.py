"""What a test does when a real service it needs cannot be started."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import NoReturn, Protocol, TypeVar

import pytest

from scripts.procs import ServiceUnavailable


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def service_unavailable(reason: str) -> NoReturn:
    """Fail on CI (a missing service there is a broken build), skip with the reason elsewhere."""
    if on_ci():
        pytest.fail(f"required service unavailable on CI: {reason}")
    pytest.skip(reason)


class Service(Protocol):
    def start(self) -> object: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=Service)


@contextlib.contextmanager
def service_running(service: S) -> Iterator[S]:
    """``service`` started for the block (see ``service_unavailable`` when it cannot start),
    and stopped after it whatever happened."""
    try:
        service.start()
    except ServiceUnavailable as exc:
        service_unavailable(str(exc))
    try:
        yield service
    finally:
        service.stop()
