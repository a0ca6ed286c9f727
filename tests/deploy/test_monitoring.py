"""The dashboard and the alerting rules (deploy/monitoring/) ask only for what instances export.

A metric renamed in the code would leave a panel empty and an alert silent, and neither says
so. So every metric name the dashboard and the rules reference must be on a live instance's
``/metrics`` (an instance with Redis: the registry's gauges exist only then), and the rules
must pass ``promtool`` and fire on the series they are meant for.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from scripts.procs import REPO_ROOT, DaphneInstance, manage
from tests.support.services import service_unavailable

MONITORING = REPO_ROOT / "deploy" / "monitoring"
DASHBOARD = MONITORING / "dashboard.json"
RULES = MONITORING / "alerts.yml"
RULES_TESTS = MONITORING / "alerts-test.yml"
# Names of this project's metrics; `up` is Prometheus's own, from every scrape.
OURS = re.compile(r"\b(?:realtime|process)_[a-z0-9_]+\b")
METRICS_TOKEN = "monitoring-test-" + "m" * 40


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def rule_exprs() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def referenced(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in OURS.findall(expr)}


def exported(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.mark.redis
@pytest.mark.cluster
def test_every_metric_the_dashboard_and_rules_use_is_exported(
    redis_url: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": redis_url,
        "SECRET_KEY": "monitoring-test-" + "x" * 40,
        "METRICS_TOKEN": METRICS_TOKEN,
        "FIRESTORE_PROJECT_ID": "",
    }
    manage("migrate", "--noinput", env=env)
    instance = DaphneInstance(instance_id="monitoring", env=env, log_dir=tmp_path).start()
    try:
        request = urllib.request.Request(
            f"{instance.base_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            names = exported(response.read().decode())
    finally:
        instance.stop()
    wanted = referenced(dashboard_exprs()) | referenced(rule_exprs())
    # The check itself would pass on nothing: make sure it reads both files.
    assert "realtime_layer_status" in wanted
    assert "realtime_connections_rejected_total" in wanted
    # Healing's and the delivery histogram's series, defined in chat's own registry.
    assert {"realtime_heal_backlog", "realtime_delivery_latency_seconds_bucket"} <= wanted
    assert sorted(wanted - names) == []


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        service_unavailable("promtool is not installed (apt-get install prometheus)")
    return path


def test_the_rules_pass_promtool_and_fire_on_their_series() -> None:
    check = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # The unit tests (alerts-test.yml) feed each alert the series it watches.
    run = subprocess.run(
        [promtool(), "test", "rules", str(RULES_TESTS)],
        capture_output=True,
        text=True,
        cwd=MONITORING,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULES_TESTS.read_text()))
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    }
    assert tested == alerts
