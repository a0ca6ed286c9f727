"""The last guarantee that a stopping process ends (docs/health.md, "Draining on SIGTERM").

Once the server has stopped, the interpreter joins every non-daemon thread before it exits: a
database thread blocked on a call back into the stopped event loop, or a client library's
worker that never returns, would keep a drained instance alive until something kills it.
``exit_watchdog_arm`` gives the normal exit a bounded time, then ends the process with the
status it would have had, naming the threads it gave up on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

logger = logging.getLogger(__name__)


def _lingering_threads() -> list[str]:
    current = threading.current_thread()
    return sorted(
        t.name
        for t in threading.enumerate()
        if t is not current and t is not threading.main_thread() and not t.daemon
    )


def exit_watchdog_arm(seconds: float, *, status: int = 0) -> threading.Timer:
    """End the process with ``status`` if it is still alive ``seconds`` from now."""

    def force() -> None:
        threads = ",".join(_lingering_threads())
        logger.warning(
            "exit forced after %ss; threads left: %s",
            seconds,
            threads,
            extra={
                "fields": {"event": "exit_forced", "after_seconds": seconds, "threads": threads}
            },
        )
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)

    timer = threading.Timer(seconds, force)
    # A daemon: it never holds the exit up itself.
    timer.daemon = True
    timer.name = "exit-watchdog"
    timer.start()
    return timer
