"""Fixtures that start real services: redis-server and the Firestore emulator.

On CI (``CI=true``) a service that cannot be started fails the test; on a laptop without it
the test is skipped with the reason.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scripts.procs import (
    FirestoreEmulator,
    RedisClusterSet,
    RedisSentinelSet,
    RedisServer,
    ServiceUnavailable,
)
from tests.support.services import service_unavailable


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session. Tests that kill Redis use ``redis_factory``."""
    server = RedisServer(log_dir=tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except ServiceUnavailable as exc:
        service_unavailable(str(exc))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session server's URL, emptied after the test (it is private to this run)."""
    yield redis_server.url
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    try:
        client.flushall()
    finally:
        client.close()


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start private redis-servers that a test may kill and restart; all stopped afterwards."""
    started: list[RedisServer] = []

    def make(port: int | None = None) -> RedisServer:
        server = RedisServer(port=port, log_dir=tmp_path / f"redis-{len(started)}")
        try:
            server.start()
        except ServiceUnavailable as exc:
            service_unavailable(str(exc))
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterSet]:
    """A 3-master, 3-replica Redis Cluster for the session (a test may kill a master)."""
    cluster = RedisClusterSet(log_dir=tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
    except ServiceUnavailable as exc:
        service_unavailable(str(exc))
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster(redis_cluster_set: RedisClusterSet) -> Iterator[RedisClusterSet]:
    """The session's Redis Cluster, healthy, emptied after the test."""
    redis_cluster_set.wait_healthy(timeout=30)
    yield redis_cluster_set
    from scripts.procs import redis_cli

    for node in redis_cluster_set.primaries():
        redis_cli("-p", str(node.port), "FLUSHALL", check=False)


@pytest.fixture
def redis_sentinels(tmp_path: Path) -> Iterator[RedisSentinelSet]:
    """A master, a replica and three Sentinels, private to the test (it may kill the master)."""
    sentinels = RedisSentinelSet(log_dir=tmp_path / "redis-sentinel")
    try:
        sentinels.start()
    except ServiceUnavailable as exc:
        service_unavailable(str(exc))
    yield sentinels
    sentinels.stop()


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirestoreEmulator]:
    emulator = FirestoreEmulator(log_dir=tmp_path_factory.mktemp("firestore"))
    try:
        emulator.start()
    except ServiceUnavailable as exc:
        service_unavailable(str(exc))
    previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    yield emulator
    if previous is None:
        os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
    else:
        os.environ["FIRESTORE_EMULATOR_HOST"] = previous
    emulator.stop()


@pytest.fixture
def firestore(firestore_emulator: FirestoreEmulator) -> Iterator[FirestoreEmulator]:
    """The session emulator, emptied after the test."""
    yield firestore_emulator
    if firestore_emulator.alive():
        firestore_emulator.clear()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """No connection pool in the test process itself (instances it starts keep theirs).

    Connections opened from worker threads (sync views, ``database_sync_to_async``) would go
    back to the pool and stay open, and an open one keeps the test database from being
    dropped at the end of the run.
    """
    from django.conf import settings

    settings.DATABASES["default"].get("OPTIONS", {}).pop("pool", None)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """Close the connections left on worker threads before the test database is dropped.

    Channels' test communicator turns ``close_old_connections`` off, so the consumers'
    database threads (``realtime_project.database``) and Channels' thread-sensitive thread (the
    tests' own ``sync_to_async`` helpers) keep theirs open until closed here.
    """
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    from health.checks import database_probe_close
    from realtime_project.database import database_async_close, database_threads_close

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)
    database_threads_close()
    # Loops still open keep their async connections (realtime_project.database) until here.
    database_async_close()
    # The health check probes the database from a thread of its own (health/checks.py).
    database_probe_close()


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    """Throttle counters live in Django's cache (local memory here): none leak between tests."""
    yield
    from django.core.cache import cache

    from accounts.throttles import throttle_fallback_reset

    cache.clear()
    throttle_fallback_reset()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Every skip of the run, grouped by reason, so a missing service is never silent."""
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if not reasons:
        return
    terminalreporter.section(f"{sum(reasons.values())} skipped, and why")
    for reason, count in reasons.most_common():
        terminalreporter.write_line(f"{count:5d}  {reason}")
    terminalreporter.write_line(
        "scripts/install-system-packages (as root) installs the services the suite needs."
    )
