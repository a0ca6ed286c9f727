"""``python -m realtime_project.runtime.serve [daphne's arguments]``: Daphne on the event loop
that ``EVENT_LOOP`` names (docs/health.md, "Event loop").

Daphne makes its event loop, and installs Twisted's asyncio reactor on it, when
``daphne.server`` is imported: before it reads its command line, so before the application
module (and anything it could set) is loaded. The loop's kind is therefore chosen here,
before Daphne is imported at all: with ``uvloop`` the asyncio event loop policy is uvloop's,
so the loop Daphne makes is a uvloop loop (libuv's polling, timers and socket transports in
C) and Twisted's reactor runs on it unchanged. ``asyncio`` keeps the standard library's.
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


def main() -> None:
    event_loop_policy_install()
    from daphne.cli import CommandLineInterface

    sys.argv[0] = "daphne"
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
