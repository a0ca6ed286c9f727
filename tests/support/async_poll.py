"""Poll an async condition with a deadline, the async twin of ``scripts.procs.wait_until``."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def async_wait_until(
    predicate: Callable[[], Any | Awaitable[Any]],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 (same signature as scripts.procs.wait_until)
    interval: float = 0.02,
    what: str = "",
    retry_on: tuple[type[Exception], ...] = (Exception,),
) -> Any:
    """Await ``predicate()`` (sync or async) until it is truthy or ``timeout`` passes.

    An exception of ``retry_on`` counts as not ready yet (and is said in the timeout's
    message); any other propagates at once, so a predicate that asserts along the way
    (``retry_on=()``) fails the test on the spot instead of being retried.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
        except retry_on as exc:  # the thing polled for may raise until it is ready
            result, last_error = None, exc
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}{detail}")
        await asyncio.sleep(interval)
