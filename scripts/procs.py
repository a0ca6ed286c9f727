"""Real local processes: redis-server, the Firestore emulator, Daphne instances, HAProxy.

One implementation serves the ``scripts/cluster`` command, the test fixtures and the
benchmarks, so what the tests start is what a developer starts. Everything binds to
127.0.0.1 on a free port, is stopped by ``stop()`` (or ``kill()`` to simulate a crash), and
readiness is polled with a deadline, never slept for.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


class ServiceUnavailable(RuntimeError):
    """A binary the service needs is not installed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A free port for a Redis Cluster node: at most 55535, with its bus port (+10000) free."""
    import random

    for _ in range(200):
        port = random.randint(20000, 55535)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
        except Exception as exc:  # the thing polled for may raise until it is ready
            result, last_error = None, exc
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def process_children(pid: int) -> list[int]:
    """The direct children of ``pid``: a ``PROCESSES`` > 1 instance's Daphne processes."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def http_get(url: str, timeout: float = 1.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


class Process:
    """A child process with its output in a log file, in its own process group."""

    name = "process"

    def __init__(self, log_dir: Path | None = None) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.log_path = self.log_dir / f"{self.name}.log"
        self._log: IO[bytes] | None = None

    def _spawn(self, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in _reap)
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=REPO_ROOT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        # The whole group, even once its leader has exited: a launcher script may leave a
        # child (the emulator's JVM) running in it.
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """Crash it: SIGKILL to the whole process group, no chance to clean up."""
        self.signal(signal.SIGKILL)
        self._reap(5)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask it to stop (SIGTERM), then kill it if it does not within ``timeout``."""
        self.signal(signal.SIGTERM)
        if not self._reap(timeout):
            self.kill()

    def _reap(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        if self._log is not None:
            self._log.close()
            self._log = None
        return True

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _check_started(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")


class RedisServer(Process):
    """A throwaway redis-server without persistence, on a fixed port so it can be restarted."""

    name = "redis"

    def __init__(
        self,
        port: int | None = None,
        log_dir: Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        super().__init__(log_dir)
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` as a dict (via redis-cli; empty when it does not answer)."""
        out = redis_cli("-p", str(self.port), "INFO", section, check=False)
        pairs = (line.split(":", 1) for line in out.splitlines() if ":" in line)
        return {key.strip(): value.strip() for key, value in pairs}

    @staticmethod
    def binary() -> str:
        path = shutil.which("redis-server")
        if path is None:
            raise ServiceUnavailable("redis-server is not installed (apt-get install redis-server)")
        return path

    def start(self, timeout: float = 10.0) -> RedisServer:
        self._spawn(
            [
                self.binary(),
                "--port", str(self.port),
                "--bind", LOOPBACK,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.log_dir),
                *self.extra_args,
            ]
        )  # fmt: skip
        wait_until(self._ready, timeout=timeout, what=f"redis-server on port {self.port}")
        return self

    def _ready(self) -> bool:
        self._check_started()
        return self.ping()

    def ping(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def restart(self) -> RedisServer:
        """Start again on the same port, empty (as a Redis restart without persistence)."""
        self.stop()
        return self.start()


def redis_cli(*args: str, check: bool = True, timeout: float = 30) -> str:
    path = shutil.which("redis-cli")
    if path is None:
        raise ServiceUnavailable("redis-cli is not installed (apt-get install redis-tools)")
    done = subprocess.run(
        [path, "-h", LOOPBACK, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


# A short node timeout, so a killed master's replica is promoted within a few seconds; a
# replica promoted after a short outage is fine for a local cluster.
CLUSTER_NODE_ARGS = [
    "--cluster-enabled", "yes",
    "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", "1000",
    "--cluster-replica-validity-factor", "0",
]  # fmt: skip


class RedisClusterSet:
    """A Redis Cluster on loopback: ``masters`` masters, each with ``replicas`` replicas.

    Short node timeout, so a killed master's replica is promoted within a few seconds. Its
    ``url`` is the comma-separated seed list ``REDIS_URL`` takes with ``REDIS_CLUSTER=true``.
    """

    def __init__(self, *, masters: int = 3, replicas: int = 1, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        self.masters = masters
        self.replicas = replicas
        self.nodes: list[RedisServer] = []
        for index in range(masters * (1 + replicas)):
            port = free_cluster_port()
            self.nodes.append(
                RedisServer(
                    port=port,
                    log_dir=self.log_dir / f"node-{index + 1}",
                    extra_args=CLUSTER_NODE_ARGS,
                )
            )

    @property
    def url(self) -> str:
        return ",".join(node.url.removesuffix("/0") for node in self.nodes if node.alive())

    def start(self, timeout: float = 30.0) -> RedisClusterSet:
        for node in self.nodes:
            node.start()
        redis_cli(
            "--cluster", "create", *(node.address for node in self.nodes),
            "--cluster-replicas", str(self.replicas), "--cluster-yes",
        )  # fmt: skip
        self.wait_healthy(timeout=timeout)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        for node in self.nodes:
            node.signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop(timeout=timeout)

    def role(self, node: RedisServer) -> str:
        return node.info("replication").get("role", "")

    def primaries(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.alive() and self.role(node) == "master"]

    def healthy(self) -> bool:
        """Every live node says the cluster is ok and there are ``masters`` live masters."""
        live = [node for node in self.nodes if node.alive()]
        for node in live:
            if node.info("cluster").get("cluster_enabled") != "1":
                return False
            state = redis_cli("-p", str(node.port), "CLUSTER", "INFO", check=False)
            if "cluster_state:ok" not in state:
                return False
        return len(self.primaries()) == self.masters

    def wait_healthy(self, timeout: float = 30.0) -> None:
        wait_until(self.healthy, timeout=timeout, interval=0.1, what="the Redis Cluster ok")

    def master_for_key(self, key: str) -> RedisServer:
        slot = int(redis_cli("-p", str(self.nodes[0].port), "CLUSTER", "KEYSLOT", key).strip())
        for node in self.primaries():
            if any(lo <= slot <= hi for lo, hi in _own_slots(node)):
                return node
        raise RuntimeError(f"no master holds slot {slot}")


def _own_slots(node: RedisServer) -> list[tuple[int, int]]:
    """The slot ranges ``node`` serves as a master (from CLUSTER NODES, its ``myself`` line)."""
    out = redis_cli("-p", str(node.port), "CLUSTER", "NODES", check=False)
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 8 and "myself" in fields[2]:
            ranges = []
            for item in fields[8:]:
                if item.startswith("["):
                    continue  # a slot being migrated
                lo, _, hi = item.partition("-")
                ranges.append((int(lo), int(hi or lo)))
            return ranges
    return []


class RedisSentinelSet:
    """A monitored master, one replica and three Sentinels (quorum 2) on loopback.

    Sentinels judge the master down after one second, so a failover completes within a few.
    """

    MASTER_NAME = "mymaster"

    def __init__(self, *, sentinels: int = 3, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="redis-sentinel-"))
        self.master = RedisServer(log_dir=self.log_dir / "master")
        self.replica = RedisServer(
            log_dir=self.log_dir / "replica",
            extra_args=["--replicaof", LOOPBACK, str(self.master.port)],
        )
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinels: list[SentinelProcess] = [
            SentinelProcess(port=port, log_dir=self.log_dir / f"sentinel-{index + 1}")
            for index, port in enumerate(self.sentinel_ports)
        ]

    @property
    def addresses(self) -> str:
        """``REDIS_SENTINELS``: host:port of every Sentinel."""
        return ",".join(f"{LOOPBACK}:{port}" for port in self.sentinel_ports)

    def start(self, timeout: float = 30.0) -> RedisSentinelSet:
        self.master.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start(master_port=self.master.port, master_name=self.MASTER_NAME)
        wait_until(
            lambda: (
                self.current_master_port() == self.master.port
                and self.replica.info("replication").get("master_link_status") == "up"
            ),
            timeout=timeout,
            interval=0.1,
            what="Sentinels watching a master with its replica in sync",
        )
        return self

    def current_master_port(self) -> int | None:
        for sentinel in self.sentinels:
            if not sentinel.alive():
                continue
            out = redis_cli(
                "-p", str(sentinel.port),
                "SENTINEL", "get-master-addr-by-name", self.MASTER_NAME,
                check=False,
            )  # fmt: skip
            lines = out.split()
            if len(lines) == 2 and lines[1].isdigit():
                return int(lines[1])
        return None

    def stop(self, timeout: float = 5.0) -> None:
        for process in [*self.sentinels, self.replica, self.master]:
            process.stop(timeout=timeout)


class SentinelProcess(Process):
    name = "sentinel"

    def __init__(self, *, port: int, log_dir: Path | None = None) -> None:
        super().__init__(log_dir)
        self.port = port

    def start(self, *, master_port: int, master_name: str) -> SentinelProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        config = self.log_dir / "sentinel.conf"
        # A Sentinel rewrites its own file (the current master, the other Sentinels).
        config.write_text(
            f"port {self.port}\n"
            f"bind {LOOPBACK}\n"
            f"dir {self.log_dir}\n"
            f"sentinel monitor {master_name} {LOOPBACK} {master_port} 2\n"
            f"sentinel down-after-milliseconds {master_name} 1000\n"
            f"sentinel failover-timeout {master_name} 3000\n"
            f"sentinel parallel-syncs {master_name} 1\n"
        )
        self._spawn([RedisServer.binary(), str(config), "--sentinel"])
        wait_until(self._ready, timeout=10, what=f"redis-sentinel on port {self.port}")
        return self

    def _ready(self) -> bool:
        self._check_started()
        return "PONG" in redis_cli("-p", str(self.port), "PING", check=False)


def firestore_emulator_launcher() -> str:
    """The emulator's launcher from the Google Cloud CLI installation."""
    candidates: list[Path] = []
    gcloud = shutil.which("gcloud")
    if gcloud:
        sdk_root = Path(os.path.realpath(gcloud)).parent.parent
        candidates.append(sdk_root / "platform/cloud-firestore-emulator/cloud_firestore_emulator")
    for root in (
        "/usr/lib/google-cloud-sdk",
        "/usr/share/google-cloud-sdk",
        "/opt/google-cloud-sdk",
    ):
        candidates.append(Path(root) / "platform/cloud-firestore-emulator/cloud_firestore_emulator")
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    raise ServiceUnavailable("the Firestore emulator of the Google Cloud CLI is not installed")


class FirestoreEmulator(Process):
    """The real Cloud Firestore emulator, reached through ``FIRESTORE_EMULATOR_HOST``."""

    name = "firestore"

    def __init__(
        self,
        port: int | None = None,
        project_id: str = "demo-realtime",
        log_dir: Path | None = None,
    ) -> None:
        super().__init__(log_dir)
        self.port = port or free_port()
        self.project_id = project_id

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 60.0) -> FirestoreEmulator:
        if shutil.which("java") is None:
            raise ServiceUnavailable("java is needed by the Firestore emulator")
        self._spawn(
            [
                firestore_emulator_launcher(),
                "start",
                f"--host={LOOPBACK}",
                f"--port={self.port}",
                f"--project_id={self.project_id}",
            ]
        )
        wait_until(self._ready, timeout=timeout, what=f"Firestore emulator on {self.host}")
        return self

    def _ready(self) -> bool:
        self._check_started()
        try:
            status, body = http_get(f"http://{self.host}/", timeout=0.5)
        except OSError:
            return False
        return status == 200 and body.strip() == b"Ok"

    def clear(self) -> None:
        """Delete every document of the project (the emulator's own reset endpoint)."""
        request = urllib.request.Request(
            f"http://{self.host}/emulator/v1/projects/{self.project_id}/databases/(default)/documents",
            method="DELETE",
        )
        with urllib.request.urlopen(request, timeout=5):
            pass

    def stop(self, timeout: float = 10.0) -> None:
        # The launcher script exits at once; the JVM it started shuts down on its own time and
        # keeps answering until then. Stopped means the port is closed.
        super().stop(timeout)
        try:
            wait_until(lambda: not port_open(self.port), timeout=timeout, what="the emulator")
        except TimeoutError:
            self.kill()

    def kill(self) -> None:
        super().kill()
        wait_until(lambda: not port_open(self.port), timeout=10, what="the killed emulator")

    def restart(self) -> FirestoreEmulator:
        self.stop()
        return self.start()


def python_bin() -> str:
    return sys.executable


def venv_bin(name: str) -> str:
    """A console script of the running interpreter's environment (the project's venv)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


class WebServer(Process):
    """A process serving the project's HTTP and WebSocket URLs on a loopback port."""

    port: int

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/ws/"


class DaphneInstance(WebServer):
    """One API instance: ``daphne realtime_project.asgi:application`` on a loopback port.

    ``env`` adds to (and overrides) the current environment: REDIS_URL, DATABASE_URL,
    FIRESTORE_PROJECT_ID, short PRESENCE_GRACE_SECONDS for tests, and so on.
    """

    name = "daphne"

    def __init__(
        self,
        *,
        instance_id: str,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        log_dir: Path | None = None,
        backlog: int = 1024,
        extra_args: list[str] | None = None,
    ) -> None:
        self.name = f"daphne-{instance_id}"
        super().__init__(log_dir)
        self.instance_id = instance_id
        self.port = port or free_port()
        self.env = dict(env or {})
        self.backlog = backlog
        self.extra_args = list(extra_args or [])

    def argv(self) -> list[str]:
        # Twisted's default listen backlog (50) overflows under bursts of connects.
        endpoint = f"tcp:port={self.port}:interface={LOOPBACK}:backlog={self.backlog}"
        return [
            sys.executable, "-m", "realtime_project.runtime.serve",
            "-e", endpoint,
            *self.extra_args,
            "realtime_project.asgi:application",
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> DaphneInstance:
        env = {**os.environ, "INSTANCE_ID": self.instance_id, **self.env}
        env.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
        # Daphne's access log goes to stdout: unbuffered, so a killed instance's log is whole.
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._spawn(self.argv(), env=env)
        wait_until(self._ready, timeout=timeout, what=f"{self.name} on port {self.port}")
        return self

    def _ready(self) -> bool:
        self._check_started()
        if not port_open(self.port):
            return False
        # Any HTTP answer means Django is loaded and serving.
        status, _ = http_get(f"{self.base_url}/api/health", timeout=2.0)
        return status > 0


class HAProxy(WebServer):
    """HAProxy in the foreground (``-db``) with a rendered config file.

    ``stats_port`` serves HAProxy's stats page; ``server_states()`` reads it as CSV so tests
    and ``scripts/cluster status`` can see which instances the balancer considers up. ``env``
    is added to this process's environment: the config reads ``CONNECT_RATE_PER_INSTANCE``
    from it (deploy/haproxy.cfg).
    """

    name = "haproxy"

    def __init__(
        self,
        *,
        config_text: str,
        port: int,
        stats_port: int,
        log_dir: Path | None = None,
        backend: str = "instances",
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(log_dir)
        self.config_text = config_text
        self.env = {**os.environ, **(env or {})}
        self.port = port
        self.stats_port = stats_port
        self.backend = backend
        self.config_path = self.log_dir / "haproxy.cfg"

    @staticmethod
    def binary() -> str:
        path = shutil.which("haproxy")
        if path is None:
            raise ServiceUnavailable("haproxy is not installed (apt-get install haproxy)")
        return path

    def start(self, timeout: float = 10.0) -> HAProxy:
        binary = self.binary()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        check = subprocess.run(
            [binary, "-c", "-q", "-f", str(self.config_path)],
            capture_output=True,
            text=True,
            check=False,
            env=self.env,
        )
        if check.returncode != 0:
            raise RuntimeError(f"invalid HAProxy config:\n{check.stdout}{check.stderr}")
        self._spawn([binary, "-db", "-f", str(self.config_path)], env=self.env)
        wait_until(self._ready, timeout=timeout, what=f"haproxy on port {self.port}")
        return self

    def _ready(self) -> bool:
        self._check_started()
        return port_open(self.port) and port_open(self.stats_port)

    def server_states(self) -> dict[str, str]:
        """``{server name: status}`` of the backend (``UP``, ``DOWN``, ``MAINT``, ...)."""
        status, body = http_get(f"http://{LOOPBACK}:{self.stats_port}/stats;csv", timeout=2.0)
        if status != 200:
            return {}
        states: dict[str, str] = {}
        lines = body.decode().splitlines()
        header = lines[0].lstrip("# ").split(",") if lines else []
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == self.backend and row.get("svname") not in {
                "FRONTEND",
                "BACKEND",
            }:
                # "UP 1/2" while a server is on its way up or down: the first word decides.
                states[row["svname"]] = row.get("status", "").split(" ")[0]
        return states


def manage(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``manage.py`` in a child process (as an operator would) and return its stdout."""
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
    result = subprocess.run(
        [python_bin(), str(REPO_ROOT / "manage.py"), *args],
        env=full_env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result.stdout


class IsolatedDatabase:
    """A database of its own for a set of processes (a cluster, a benchmark).

    On PostgreSQL (``base_url`` is ``postgres://...``) a fresh database is created beside the
    one named and dropped afterwards; otherwise a SQLite file in ``directory``.
    """

    def __init__(self, base_url: str | None, directory: Path) -> None:
        self.base_url = base_url
        self.directory = directory
        self.name = f"realtime_{os.getpid()}_{free_port()}"
        self.url = ""

    def create(self) -> str:
        if self.base_url and self.base_url.startswith(("postgres://", "postgresql://")):
            import psycopg

            prefix, _, _ = self.base_url.rpartition("/")
            with psycopg.connect(self.base_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
            self.url = f"{prefix}/{self.name}"
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.url = f"sqlite:///{self.directory / (self.name + '.sqlite3')}"
        return self.url

    def drop(self) -> None:
        if self.base_url and self.base_url.startswith(("postgres://", "postgresql://")):
            import psycopg

            with psycopg.connect(self.base_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
