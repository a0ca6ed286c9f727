"""``python -m realtime_project.runtime.serve [daphne's arguments]``: Daphne on the event loop
that ``EVENT_LOOP`` names (docs/health.md, "Event loop").

Daphne makes its event loop, and installs Twisted's asyncio reactor on it, when
``daphne.server`` is imported: before it reads its command line, so before the application
module (and anything it could set) is loaded. The loop's kind is therefore chosen here,
before Daphne is imported at all: with ``uvloop`` the asyncio event loop policy is uvloop's,
so the loop Daphne makes is a uvloop loop (libuv's polling, timers and socket transports in
C) and Twisted's reactor runs on it unchanged. ``asyncio`` keeps the standard library's.

With ``PROCESSES`` above 1 this process opens the listening sockets and supervises that many
such processes on them instead (``realtime_project.runtime.processes``, docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import os
import sys


def event_loop_policy_install() -> str:
    """Install the asyncio event loop policy ``EVENT_LOOP`` names; the name installed."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
    from realtime_project.conf import realtime_settings

    if "daphne.server" in sys.modules or "twisted.internet.reactor" in sys.modules:
        raise RuntimeError("the event loop must be chosen before Daphne or a reactor loads")
    kind = realtime_settings.EVENT_LOOP
    if kind == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return kind


def malloc_configure() -> bool:
    """Apply ``MALLOC_ARENA_MAX`` (realtime_project/runtime/malloc.py) before any thread."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
    from realtime_project.conf import realtime_settings
    from realtime_project.runtime.malloc import malloc_arenas_limit

    return malloc_arenas_limit(realtime_settings.MALLOC_ARENA_MAX)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
    from realtime_project.conf import realtime_settings
    from realtime_project.runtime.processes import CHILD_ENV, processes_serve

    malloc_configure()
    if realtime_settings.PROCESSES > 1 and CHILD_ENV not in os.environ:
        # Supervise children (docs/scaling.md); this process never loads Daphne.
        sys.exit(
            processes_serve(
                sys.argv[1:], realtime_settings.PROCESSES, realtime_settings.INSTANCE_ID
            )
        )
    event_loop_policy_install()
    from daphne.cli import CommandLineInterface

    sys.argv[0] = "daphne"
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
