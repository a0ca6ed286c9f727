"""A stopping process ends even when a thread it would wait for never returns."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time

from daphne.server import Server

from realtime_project.runtime.daphne import daphne_running_applications
from scripts.procs import REPO_ROOT

STUCK = """
import threading
from realtime_project.runtime.exit_watchdog import exit_watchdog_arm
threading.Thread(target=threading.Event().wait, name="stuck-worker").start()
exit_watchdog_arm(0.5)
print("main done", flush=True)
"""


def test_a_thread_that_never_returns_does_not_keep_the_process_alive() -> None:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", STUCK], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0
    assert time.monotonic() - began < 20
    assert "main done" in done.stdout
    assert "stuck-worker" in done.stdout + done.stderr


def test_daphne_still_keeps_its_application_instances_where_the_drain_looks() -> None:
    # Tripwire: the drain waits for ``Server.connections[...]["application_instance"]``.
    assert "application_instance" in inspect.getsource(Server.create_application)
    assert "self.connections" in inspect.getsource(Server.create_application)
    assert daphne_running_applications() == []
