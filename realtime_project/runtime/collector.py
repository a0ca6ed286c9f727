"""Python's cyclic garbage collector tuned for a process holding thousands of sockets.

Measured (docs/benchmarks.md): with CPython's default thresholds an instance holding 1,000
sockets ran a full collection every few seconds, each stopping the event loop for 200-560 ms,
and those pauses were the whole p99 of delivery at a few hundred frames a second. A frame's
short-lived containers (layer messages, frames, futures) outlived the default 700-allocation
youngest generation while they waited in a queue, were promoted, and piled up until a full
collection walked every socket's objects. A larger youngest generation lets them die young;
what a socket keeps for its lifetime is still promoted and collected as before.

The modules, settings and routing loaded at startup live as long as the process: they are
moved out of the collector's sight (``gc.freeze``), so a full collection does not walk them.
"""

from __future__ import annotations

import gc

from realtime_project.conf import realtime_settings


def collector_tune() -> None:
    """Apply ``GC_GEN0_THRESHOLD`` and freeze what startup built (call once, after it)."""
    threshold = realtime_settings.GC_GEN0_THRESHOLD
    if threshold <= 0:
        return  # the interpreter's defaults
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(threshold, gen1, gen2)
    gc.collect()
    gc.freeze()
