"""The server's entry point caps glibc malloc's arenas at MALLOC_ARENA_MAX before any thread
starts (realtime_project/runtime/malloc.py): threads share them instead of each keeping its
own free space (docs/benchmarks.md, "Memory per idle socket on one instance")."""

from __future__ import annotations

import os
import platform
import re

import pytest

from tests.support.fresh_python import python_code_run

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the arenas are glibc malloc's"
)

# Six threads alive at once (an exited thread's arena goes to the next), each allocating
# beyond pymalloc's small objects as a database thread does; then glibc's count of its
# arenas (malloc_stats prints one "Arena N:" each, on stderr).
PROBE = """
import ctypes, sys, threading
from realtime_project.runtime.serve import malloc_configure
print(malloc_configure())
alive = threading.Barrier(6)
def work():
    blocks = [bytearray(4096) for _ in range(100)]
    alive.wait(timeout=30)
threads = [threading.Thread(target=work) for _ in range(6)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
sys.stdout.flush()
ctypes.CDLL(None).malloc_stats()
"""


def _arenas(malloc_arena_max: str | None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    if malloc_arena_max is not None:
        env["MALLOC_ARENA_MAX"] = malloc_arena_max
    result = python_code_run(PROBE, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), len(re.findall(r"^Arena \d+:", result.stderr, re.MULTILINE))


def test_threads_share_two_arenas_by_default() -> None:
    applied, arenas = _arenas(None)
    assert applied == "True"
    assert arenas <= 2


def test_zero_leaves_glibcs_own_limit_an_arena_a_thread() -> None:
    applied, arenas = _arenas("0")
    assert applied == "False"
    assert arenas >= 4
