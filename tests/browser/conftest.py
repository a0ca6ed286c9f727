"""Headless Chromium (Debian's package, driven by Playwright) and demo servers for the page.

Chromium comes from the system (``apt-get install chromium``), never from a Playwright
download. Missing Chromium fails the run on CI (``CI=true``) and skips it elsewhere.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.deployment import Cluster
from scripts.procs import REPO_ROOT, FirestoreEmulator, ServiceUnavailable
from tests.support.services import service_unavailable

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


def chromium_executable() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not session: Playwright's sync API keeps an event loop running on this
    # thread while it is started, and every async test after it would fail to run its own.
    executable = chromium_executable()
    if executable is None:
        service_unavailable("chromium is not installed (apt-get install chromium chromium-driver)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_unavailable("playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    return SCREENSHOT_DIR


@pytest.fixture(scope="module")
def demo_cluster(
    firestore_emulator: FirestoreEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Two instances behind HAProxy over real Redis and Firestore, seeded with the demo users.

    Shared by a module's tests (starting it costs seconds); tests tell their own messages
    apart by their text, and ``cluster`` brings back any instance a test killed.
    """
    cluster = Cluster(
        instances=2,
        state_dir=tmp_path_factory.mktemp("cluster"),
        with_firestore=False,
        database_url=os.environ.get("DATABASE_URL"),
        env={
            # The session's emulator, rather than a second JVM for this cluster.
            "FIRESTORE_PROJECT_ID": firestore_emulator.project_id,
            "FIRESTORE_EMULATOR_HOST": firestore_emulator.host,
            "PRESENCE_GRACE_SECONDS": "1",
            "HEARTBEAT_INTERVAL_SECONDS": "2",
            "DRAIN_DELAY_SECONDS": "0",
        },
    )
    try:
        cluster.start()
    except ServiceUnavailable as exc:
        service_unavailable(str(exc))
    yield cluster
    cluster.stop()
    firestore_emulator.clear()


@pytest.fixture
def cluster(demo_cluster: Cluster) -> Cluster:
    """The module's cluster with every instance up and in the balancer."""
    for instance in demo_cluster.instances:
        if not instance.alive():
            demo_cluster.restart_instance(instance)
    demo_cluster.wait_balancer(up=[i.instance_id for i in demo_cluster.instances], timeout=15)
    return demo_cluster
