"""The server's entry point runs Daphne on the event loop EVENT_LOOP names (docs/health.md)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.fresh_python import python_code_run

# What Daphne's own module made its loop, once the entry point has chosen the policy.
PROBE = """
from realtime_project.runtime.serve import event_loop_policy_install
event_loop_policy_install()
import daphne.server
from twisted.internet import reactor
loop = daphne.server.twisted_loop
print(type(loop).__module__, reactor._asyncioEventloop is loop)
"""
# Choosing once Daphne has made its loop would change nothing: refused.
LATE = """
import daphne.server
from realtime_project.runtime.serve import event_loop_policy_install
event_loop_policy_install()
"""


def _run(code: str, event_loop: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EVENT_LOOP"}
    if event_loop is not None:
        env["EVENT_LOOP"] = event_loop
    return python_code_run(code, env=env)


@pytest.mark.parametrize(
    ("event_loop", "expected"),
    [(None, "uvloop True"), ("uvloop", "uvloop True"), ("asyncio", "asyncio.unix_events True")],
)
def test_daphne_and_its_reactor_run_on_the_chosen_loop(
    event_loop: str | None, expected: str
) -> None:
    result = _run(PROBE, event_loop)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_a_loop_chosen_after_daphne_loaded_is_refused() -> None:
    result = _run(LATE, "uvloop")
    assert result.returncode != 0
    assert "the event loop must be chosen before Daphne" in result.stderr
