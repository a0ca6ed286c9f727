"""Python code run in a fresh interpreter from the repository's root: for what only a new
process can show (the event loop chosen before Daphne loads, a refused start that patches
nothing, settings read from a clean environment)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

from scripts.procs import REPO_ROOT


def python_code_run(code: str, *, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with exactly ``env``; its output as text, whatever its exit status."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
