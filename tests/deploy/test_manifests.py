"""The deployment files agree with the code: Kubernetes manifests, the Dockerfile's command.

``scripts/test`` validates the manifests against the Kubernetes schemas and lints the
Dockerfile; these tests check what a schema cannot: that the numbers fit the drain, that every
setting exists, and that the image's start command serves ``/api/health`` when run as written
(outside a container: no engine runs here).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.procs import REPO_ROOT, free_port, http_get, manage, wait_until

MANIFESTS = REPO_ROOT / "deploy" / "kubernetes"
DOCKERFILE = REPO_ROOT / "Dockerfile"
# Closing 10,000 sockets at DRAIN_CLOSE_RATE (50/s: 200 s), the settle wait (2 s), stopping
# (1 s), the exit grace (1 s).
DRAIN_WORK_SECONDS = 204


def manifests() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


def test_the_grace_period_fits_prestop_and_the_drain() -> None:
    docs = manifests()
    pod = docs["Deployment/realtime"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    settings = docs["ConfigMap/realtime-settings"]["data"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(settings["DRAIN_DELAY_SECONDS"])
    needed = float(pre_stop[1]) + drain + DRAIN_WORK_SECONDS
    assert pod["terminationGracePeriodSeconds"] >= needed
    readiness = container["readinessProbe"]
    assert readiness["httpGet"]["path"] == "/api/health"
    # A balancer reading readiness sees the drain's 503 before the sockets are closed.
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= drain
    # Liveness must not follow /api/health: a Redis outage would restart every pod.
    assert "httpGet" not in container["livenessProbe"]


def test_every_setting_in_the_manifests_exists() -> None:
    docs = manifests()
    source = "\n".join(p.read_text() for p in (REPO_ROOT / "realtime_project").glob("*.py"))
    keys = [*docs["ConfigMap/realtime-settings"]["data"], "SECRET_KEY", "DATABASE_URL"]
    unknown = [key for key in keys if f'"{key}"' not in source]
    assert unknown == []


def test_no_manifest_carries_a_secret_value() -> None:
    """A Secret in the manifests would be applied as written: a published SECRET_KEY signs
    every session, and re-applying would overwrite the real one. It is made out of band."""
    assert [name for name in manifests() if name.startswith("Secret/")] == []
    guide = (REPO_ROOT / "docs" / "deploy.md").read_text()
    assert "kubectl create secret generic realtime-secrets" in guide


def test_the_pieces_point_at_each_other() -> None:
    docs = manifests()
    deployment = docs["Deployment/realtime"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["Service/realtime"]["spec"]["selector"].items() <= labels.items()
    assert (
        docs["PodDisruptionBudget/realtime"]["spec"]["selector"]["matchLabels"].items()
        <= labels.items()
    )
    assert docs["HorizontalPodAutoscaler/realtime"]["spec"]["scaleTargetRef"]["name"] == "realtime"
    sources = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert {s.get("configMapRef", s.get("secretRef"))["name"] for s in sources} == {
        "realtime-settings",
        "realtime-secrets",
    }
    user = re.search(r"(?m)^USER\s+(\d+)", DOCKERFILE.read_text())
    assert user is not None
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(user[1])


def dockerfile_instruction(name: str) -> str:
    """An instruction's text, continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found = re.findall(rf"(?m)^{name}\s+(.*)$", text)
    assert found, f"no {name} in the Dockerfile"
    return str(found[-1])


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in re.findall(r"(?m)^ENV\s+(.*)$", DOCKERFILE.read_text().replace("\\\n", " ")):
        for item in shlex.split(line):
            key, _, value = item.partition("=")
            env[key] = value
    return env


@pytest.mark.timeout(60)
def test_the_image_command_serves_health_outside_a_container(tmp_path: Path) -> None:
    command = json.loads(dockerfile_instruction("CMD"))
    assert command[:3] == ["python", "-m", "realtime_project.runtime.serve"]
    port = free_port()
    # The image's own command line; only the listening address moves to a free loopback port.
    argv = [
        arg.replace("port=8000", f"port={port}").replace("interface=0.0.0.0", "interface=127.0.0.1")
        for arg in command
    ]
    argv[0] = sys.executable
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "FIRESTORE_"))},
        **dockerfile_env(),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "SECRET_KEY": "image-command-test-" + "x" * 40,
        "DRAIN_DELAY_SECONDS": "0",
    }
    env.pop("DATABASE_URL_TEST", None)
    manage("migrate", "--noinput", env=env)
    log = (tmp_path / "daphne.log").open("wb")
    process = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:

        def healthy() -> dict[str, Any] | None:
            assert process.poll() is None, (tmp_path / "daphne.log").read_text()
            try:
                status, body = http_get(f"http://127.0.0.1:{port}/api/health", timeout=1)
            except OSError:
                return None
            return json.loads(body) if status == 200 else None

        body = wait_until(healthy, timeout=30, interval=0.2, what="the image's command healthy")
        assert body["status"] == "healthy"
        # The image's HEALTHCHECK command, pointed at the same port, passes.
        check = json.loads(dockerfile_instruction("HEALTHCHECK").split(" CMD ", 1)[1])
        check = [arg.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for arg in check]
        check[0] = sys.executable
        assert subprocess.run(check, env=env, timeout=10).returncode == 0
        # SIGTERM to the process the image runs as PID 1 drains and exits cleanly.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
