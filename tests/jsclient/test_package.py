"""The JavaScript client package (clients/js): install, type check, build, pack, and its Node
tests, the live ones against two real Daphne instances over Redis and a database.

The Node tests judge the client (tests/ in clients/js); this module starts what they need and
answers their fault requests (kill or restart an instance, restart Redis) over a small HTTP
control channel on the loopback, since only the Python side owns the processes. Node and npm
missing fail the run on CI and skip it elsewhere.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scripts.deployment import Cluster
from scripts.procs import LOOPBACK, REPO_ROOT, ServiceUnavailable
from tests.support.cluster import E2E_ENV
from tests.support.services import service_unavailable

PACKAGE = REPO_ROOT / "clients" / "js"
STATIC = REPO_ROOT / "static" / "realtime"
NPM_TIMEOUT_SECONDS = 300
NODE_MAJOR = 20  # package.json's "engines"
LIVE_TESTS = "test/live.test.mjs"
# Each live scenario takes 5-15 s on a loaded 2-core machine; the whole run, with faults
# (an instance restart waits for its health check), well under LIVE_RUN_TIMEOUT_SECONDS.
LIVE_TEST_TIMEOUT_SECONDS = 60
LIVE_RUN_TIMEOUT_SECONDS = 260


def npm(*args: str, env: dict[str, str] | None = None, timeout: float = NPM_TIMEOUT_SECONDS) -> str:
    """Run ``npm`` in the package; its output is the failure message when it fails."""
    done = subprocess.run(
        ["npm", *args],
        cwd=PACKAGE,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"npm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed() -> Path:
    """The package with its locked dev dependencies installed (``npm ci``)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            service_unavailable(f"{tool} is not installed (Node 20 and npm build clients/js)")
    version = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    if int(version.lstrip("v").split(".")[0] or 0) < NODE_MAJOR:
        service_unavailable(f"node {version} is too old: clients/js needs Node {NODE_MAJOR}+")
    npm("ci", "--no-audit", "--no-fund")
    return PACKAGE


@pytest.fixture(scope="module")
def built(installed: Path) -> Path:
    """``dist/`` compiled from the sources by ``tsc`` (without the copy into static/, which
    the staleness check compares against)."""
    npm("exec", "--", "tsc", "-p", "tsconfig.json")
    return installed / "dist"


def test_the_sources_and_an_apps_use_of_them_type_check(installed: Path) -> None:
    npm("run", "typecheck")


def test_static_realtime_holds_exactly_a_fresh_build(built: Path) -> None:
    """The demo page serves the committed build: it must be what the sources compile to."""
    fresh = sorted(p.name for p in built.glob("*.js"))
    committed = sorted(p.name for p in STATIC.glob("*.js"))
    assert fresh == committed, "run `npm run build` in clients/js and commit static/realtime"
    _, mismatch, errors = filecmp.cmpfiles(built, STATIC, fresh, shallow=False)
    assert (mismatch, errors) == ([], []), "static/realtime is stale: `npm run build` in clients/js"


def test_npm_pack_ships_the_built_modules_and_their_types_only(built: Path, tmp_path: Path) -> None:
    # dist/ is fresh already: skip the prepack build.
    npm("pack", "--ignore-scripts", "--pack-destination", str(tmp_path))
    (tarball,) = tmp_path.glob("*.tgz")
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
    manifest = json.loads((PACKAGE / "package.json").read_text())
    assert {
        "package/package.json",
        "package/README.md",
        "package/CHANGELOG.md",
        "package/dist/client.js",
        "package/dist/client.d.ts",
    } <= names
    assert not {n for n in names if n.startswith(("package/src/", "package/test/"))}
    assert manifest["exports"]["."]["types"] == "./dist/client.d.ts"


def test_node_unit_tests_pass(built: Path) -> None:
    out = npm("test", env={"RT_LIVE_URLS": ""})
    assert "# fail 0" in out, out


class Faults:
    """What the Node tests may ask for: each request is done before it is answered."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.lock = threading.Lock()
        self.done: list[str] = []

    def apply(self, action: str, instance: str | None) -> None:
        with self.lock:
            target = {"a": 0, "b": 1}.get(instance or "")
            if action == "kill" and target is not None:
                self.cluster.instances[target].kill()
            elif action == "drain" and target is not None:
                # SIGTERM: the instance closes its sockets with 1012, then exits.
                self.cluster.instances[target].stop(timeout=15)
            elif action == "restart" and target is not None:
                self.cluster.restart_instance(self.cluster.instances[target])
            elif action == "restart_redis":
                self.cluster.redis.restart()
            else:
                raise ValueError(f"unknown fault {action!r} {instance!r}")
            self.done.append(f"{action} {instance or ''}".strip())


@pytest.fixture
def control(live_cluster: Cluster) -> Iterator[tuple[str, Faults]]:
    faults = Faults(live_cluster)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                request = json.loads(self.rfile.read(length))
                faults.apply(str(request["action"]), request.get("instance"))
                status, body = 200, b'{"ok": true}'
            except Exception as exc:  # the Node test shows it as its failure
                status, body = 500, json.dumps({"error": repr(exc)}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the faults are listed by the test itself

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}", faults
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def live_cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(
        instances=2,
        state_dir=tmp_path / "cluster",
        with_firestore=False,
        database_url=os.environ.get("DATABASE_URL"),
        env={
            **E2E_ENV,
            "HEAL_INTERVAL_SECONDS": "1",
            "RATE_LIMIT_FRAMES_PER_SECOND": "1000",
            "RATE_LIMIT_BURST": "1000",
        },
    )
    try:
        cluster.start()
    except ServiceUnavailable as exc:
        service_unavailable(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.cluster
@pytest.mark.redis
@pytest.mark.timeout(330)
def test_node_tests_against_two_live_instances_survive_a_kill_a_drain_and_a_redis_restart(
    built: Path, live_cluster: Cluster, control: tuple[str, Faults]
) -> None:
    url, faults = control
    a, b = live_cluster.instances
    users = live_cluster.demo["users"]
    env = {
        "RT_LIVE_URLS": json.dumps({"a": a.ws_url, "b": b.ws_url}),
        "RT_LIVE_INSTANCE_IDS": json.dumps({"a": a.instance_id, "b": b.instance_id}),
        "RT_LIVE_USERS": json.dumps({n: users[n] for n in ("alice", "bob", "carol")}),
        "RT_LIVE_CONVERSATION": str(live_cluster.demo["conversations"]["alice-bob-carol"]["id"]),
        "RT_LIVE_CONTROL": url,
    }
    try:
        done = subprocess.run(
            ["node", "--test", f"--test-timeout={LIVE_TEST_TIMEOUT_SECONDS * 1000}", LIVE_TESTS],
            cwd=PACKAGE,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=LIVE_RUN_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"node --test {LIVE_TESTS} did not finish:\n{exc.stdout!r}\n{exc.stderr!r}")
    out = f"{done.stdout}\n{done.stderr}"
    print(out)  # the per-client counts, shown with -s or on failure
    assert done.returncode == 0, out
    assert "# fail 0" in out and "# skipped 0" in out and "# pass 6" in out, out
    # The WebSocket scenarios, then the kill and the Redis restart again on server-sent events.
    assert faults.done == [
        "kill a",
        "restart a",
        "drain b",
        "restart b",
        "restart_redis",
        "kill a",
        "restart a",
        "restart_redis",
    ]
