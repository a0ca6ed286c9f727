"""Settings come from the environment and a bad value stops the process, naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.procs import REPO_ROOT
from tests.support.fresh_python import python_code_run

PRINT_REALTIME = (
    "import django, json; django.setup(); from django.conf import settings; "
    "print(json.dumps({k: settings.REALTIME[k] for k in "
    "('PRESENCE_GRACE_SECONDS', 'CONNECTION_TTL_SECONDS', 'HEARTBEAT_INTERVAL_SECONDS', "
    "'INSTANCE_ID', 'REDIS_URL', 'FIRESTORE_PROJECT_ID')}))"
)


def _run(env: dict[str, str], code: str = PRINT_REALTIME) -> subprocess.CompletedProcess[str]:
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
            "SECRET_KEY",
            "SECRET_KEY_FILE",
        }
    }
    clean["DJANGO_SETTINGS_MODULE"] = "realtime_project.settings"
    return python_code_run(code, env={**clean, **env})


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
            "SECRET_KEY": "a-shared-key-" + "x" * 50,
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


PRINT_SECURITY = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'key': s.SECRET_KEY, 'secure': s.SESSION_COOKIE_SECURE, "
    "'csrf': s.CSRF_COOKIE_SECURE, 'hsts': s.SECURE_HSTS_SECONDS}))"
)


def test_several_instances_without_a_secret_key_refuse_to_start(tmp_path) -> None:
    """A real instance (Daphne) with REDIS_URL and no SECRET_KEY exits, naming the variable."""
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "SECRET_KEY_FILE"}}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "realtime_project.settings",
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        }
    )
    daphne = [
        str(Path(sys.executable).parent / "daphne"),
        "-p",
        "0",
        "realtime_project.asgi:application",
    ]
    result = subprocess.run(
        daphne, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set when REDIS_URL is set" in result.stderr


def test_one_process_makes_a_random_key_once_and_keeps_it(tmp_path) -> None:
    key_file = tmp_path / "keys" / "secret"
    first = _run({"SECRET_KEY_FILE": str(key_file)}, PRINT_SECURITY)
    second = _run({"SECRET_KEY_FILE": str(key_file)}, PRINT_SECURITY)
    assert first.returncode == 0, first.stderr
    key = json.loads(first.stdout)["key"]
    assert len(key) >= 50
    assert json.loads(second.stdout)["key"] == key == key_file.read_text().strip()
    assert key_file.stat().st_mode & 0o077 == 0
    other = _run({"SECRET_KEY_FILE": str(tmp_path / "elsewhere")}, PRINT_SECURITY)
    assert json.loads(other.stdout)["key"] != key


def test_secure_cookies_and_hsts_unless_debug_or_turned_off(tmp_path) -> None:
    key_file = {"SECRET_KEY_FILE": str(tmp_path / "k")}
    production = json.loads(_run(key_file, PRINT_SECURITY).stdout)
    assert production["secure"] and production["csrf"] and production["hsts"] >= 31536000
    debug = json.loads(_run({**key_file, "DEBUG": "true"}, PRINT_SECURITY).stdout)
    assert not debug["secure"] and not debug["csrf"] and debug["hsts"] == 0
    plain_http = json.loads(_run({**key_file, "SECURE_COOKIES": "false"}, PRINT_SECURITY).stdout)
    assert not plain_http["secure"] and plain_http["hsts"] == 0


def test_every_realtime_key_is_declared_with_its_type() -> None:
    from django.conf import settings

    from realtime_project.conf import declared_names

    assert set(settings.REALTIME) == declared_names()


def test_a_setting_reads_as_its_declared_type(settings) -> None:
    from realtime_project.conf import realtime_settings

    settings.REALTIME = {**settings.REALTIME, "HEARTBEAT_INTERVAL_SECONDS": 1, "REDIS_URL": None}
    interval = realtime_settings.HEARTBEAT_INTERVAL_SECONDS
    assert (interval, type(interval)) == (1.0, float)
    assert realtime_settings.REDIS_URL is None
    with pytest.raises(AttributeError, match="NO_SUCH_SETTING"):
        realtime_settings.NO_SUCH_SETTING  # type: ignore[attr-defined]  # noqa: B018


@pytest.mark.parametrize("key", ["change-me", "CHANGE-ME", " changeme ", "secret"])
@pytest.mark.parametrize("redis_url", [None, "redis://127.0.0.1:1/0"])
def test_a_published_placeholder_key_refuses_to_start(key: str, redis_url: str | None) -> None:
    env = {"SECRET_KEY": key, **({"REDIS_URL": redis_url} if redis_url else {})}
    result = _run(env)
    assert result.returncode != 0
    assert "SECRET_KEY is a published placeholder" in result.stderr


@pytest.mark.parametrize(
    "key", ["short-but-not-a-placeholder", "a" * 80, "django-insecure-" + "k3y" * 20]
)
def test_a_weak_key_shared_by_several_instances_refuses_to_start(key: str) -> None:
    result = _run({"SECRET_KEY": key, "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode != 0
    assert "SECRET_KEY is too weak" in result.stderr
    # One process alone may use it (a developer's machine).
    assert _run({"SECRET_KEY": key}).returncode == 0
