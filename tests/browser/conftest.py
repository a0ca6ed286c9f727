"""Headless Chromium (Debian's package, driven by Playwright) and demo servers for the page.

Chromium comes from the system (``apt-get install chromium``), never from a Playwright
download. Missing Chromium fails the run on CI (``CI=true``) and skips it elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scripts.procs import REPO_ROOT, DaphneInstance, IsolatedDatabase, manage

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOT_DIR = REPO_ROOT / "artifacts" / "screenshots"
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _on_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> None:
    if _on_ci():
        pytest.fail(f"required for the browser suite on CI: {reason}")
    pytest.skip(reason)


def chromium_executable() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = chromium_executable()
    if executable is None:
        _unavailable("chromium is not installed (apt-get install chromium chromium-driver)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    return SCREENSHOT_DIR


@dataclass
class DemoServers:
    """Daphne instances sharing one database and one Redis, seeded with the demo data."""

    instances: list[DaphneInstance]
    env: dict[str, str]
    seed: dict[str, Any]
    log_dir: Path
    extra: list[DaphneInstance] = field(default_factory=list)

    def replace(self, index: int) -> DaphneInstance:
        """Crash instance ``index`` and start a fresh process on its port (a new instance id)."""
        old = self.instances[index]
        old.kill()
        new = DaphneInstance(
            instance_id=f"{old.instance_id}-next",
            env=self.env,
            port=old.port,
            log_dir=self.log_dir,
        ).start()
        self.instances[index] = new
        self.extra.append(old)
        return new

    def stop(self) -> None:
        for instance in self.instances:
            instance.stop()


@pytest.fixture
def demo_servers(redis_url: str, tmp_path: Path) -> Iterator[DemoServers]:
    """Two instances ("web-a", "web-b") over the real Redis, with short presence timers."""
    database = IsolatedDatabase(os.environ.get("DATABASE_URL"), tmp_path / "db")
    env = {
        "DATABASE_URL": database.create(),
        "REDIS_URL": redis_url,
        "PRESENCE_GRACE_SECONDS": "1",
        "HEARTBEAT_INTERVAL_SECONDS": "2",
        "CONNECTION_TTL_SECONDS": "10",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DRAIN_DELAY_SECONDS": "0",
    }
    manage("migrate", "--noinput", env=env)
    seed = json.loads(manage("seed_demo", "--json", env=env))
    servers = DemoServers(instances=[], env=env, seed=seed, log_dir=tmp_path / "logs")
    try:
        for name in ("web-a", "web-b"):
            servers.instances.append(
                DaphneInstance(instance_id=name, env=env, log_dir=servers.log_dir).start()
            )
        yield servers
    finally:
        servers.stop()
        database.drop()
