"""glibc malloc's arena count for an instance's threads (``MALLOC_ARENA_MAX``).

glibc gives every thread an arena of its own on its first allocation, up to eight a core.
An instance's database threads and the Firestore client's threads do part of every connect's
work in theirs, and what they free stays there as free space the RSS keeps: 14 such arenas
held about 6.5 MiB free at 10,000 sockets, 0.6 KiB a socket (docs/benchmarks.md, "Memory
per idle socket on one instance"). Two arenas keep the event loop's thread mostly on one and
the threads sharing the other; Python's threads allocate under the interpreter's lock, so
they seldom wait on the arena's.
"""

from __future__ import annotations

import ctypes

# mallopt(3): the parameter that caps the number of arenas.
M_ARENA_MAX = -8


def malloc_arenas_limit(arenas: int) -> bool:
    """Cap glibc's arenas at ``arenas`` from now on (call before threads start); ``False``
    when not applied: ``arenas`` is 0 (glibc's own limit) or the C library is not glibc."""
    if arenas <= 0:
        return False
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):
            return False  # musl's mallopt does nothing
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except OSError:
        return False
