"""Settings come from the environment and a bad value stops the process, naming it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scripts.procs import REPO_ROOT

PRINT_REALTIME = (
    "import django, json; django.setup(); from django.conf import settings; "
    "print(json.dumps({k: settings.REALTIME[k] for k in "
    "('PRESENCE_GRACE_SECONDS', 'CONNECTION_TTL_SECONDS', 'HEARTBEAT_INTERVAL_SECONDS', "
    "'INSTANCE_ID', 'REDIS_URL', 'FIRESTORE_PROJECT_ID')}))"
)


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "PRESENCE_GRACE_SECONDS",
            "CONNECTION_TTL_SECONDS",
            "HEARTBEAT_INTERVAL_SECONDS",
            "INSTANCE_ID",
            "REDIS_URL",
            "FIRESTORE_PROJECT_ID",
            "DEBUG",
        }
    }
    clean["DJANGO_SETTINGS_MODULE"] = "realtime_project.settings"
    return subprocess.run(
        [sys.executable, "-c", PRINT_REALTIME],
        env={**clean, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_defaults_are_the_embedded_mode() -> None:
    result = _run({})
    assert result.returncode == 0, result.stderr
    import json

    values = json.loads(result.stdout)
    assert values["PRESENCE_GRACE_SECONDS"] == 30
    assert values["CONNECTION_TTL_SECONDS"] == 60
    assert values["HEARTBEAT_INTERVAL_SECONDS"] == 20
    assert values["REDIS_URL"] is None
    assert values["FIRESTORE_PROJECT_ID"] is None
    assert values["INSTANCE_ID"]


def test_environment_overrides_defaults() -> None:
    result = _run(
        {
            "PRESENCE_GRACE_SECONDS": "2.5",
            "INSTANCE_ID": "api-7",
            "REDIS_URL": "redis://127.0.0.1:1/0",
        }
    )
    assert result.returncode == 0, result.stderr
    assert '"PRESENCE_GRACE_SECONDS": 2.5' in result.stdout
    assert '"INSTANCE_ID": "api-7"' in result.stdout


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PRESENCE_GRACE_SECONDS", "soon"),
        ("CONNECTION_TTL_SECONDS", "0"),
        ("HEARTBEAT_INTERVAL_SECONDS", "-1"),
        ("DEBUG", "maybe"),
        ("WS_MAX_FRAME_BYTES", "lots"),
        ("WS_MAX_BUFFERED_BYTES", "1"),
        ("TRUSTED_PROXIES", "127.0.0.1,haproxy"),
        ("DATABASE_URL", "nosuchdb://x"),
    ],
)
def test_bad_value_fails_at_start_naming_the_variable(name: str, value: str) -> None:
    result = _run({name: value})
    assert result.returncode != 0
    assert name in result.stderr
