"""The image, built once per session with podman (``scripts/image``), and its containers.

On CI a missing podman (or mmdebstrap) fails these tests; elsewhere they are skipped with the
reason, like every other service (tests/support/services.py). The image's size and how long
its steps took are printed at the end of the run (docs/deploy.md records them).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from scripts import image as image_tool
from scripts.deployment import haproxy_render
from scripts.procs import (
    LOOPBACK,
    HAProxy,
    IsolatedDatabase,
    RedisServer,
    ServiceUnavailable,
    free_port,
)
from tests.support.services import service_running, service_unavailable

IMAGE_REPORT = pytest.StashKey[dict[str, float]]()
# A local PostgreSQL where DATABASE_URL names none (CI's names one).
LOCAL_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image's tag, made (base and build) once per session."""
    log = tmp_path_factory.mktemp("image") / "build.log"
    try:
        timings = image_tool.make(log=log)
    except ServiceUnavailable as exc:
        service_unavailable(str(exc))
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{log.read_text(errors='replace')[-6000:]}") from None
    size = image_tool.image_size_bytes()
    request.config.stash[IMAGE_REPORT] = {"size_mb": size / 1e6, **timings}
    return image_tool.IMAGE


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    report = terminalreporter.config.stash.get(IMAGE_REPORT, None)
    if report is None:
        return
    terminalreporter.section("the image")
    for key, value in report.items():
        terminalreporter.write_line(f"{key:>14}  {value:.1f}")


def container_name(what: str) -> str:
    return f"realtime-test-{what}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class ImageDeployment:
    """Two containers of the image on the host's network, sharing a redis-server and a
    PostgreSQL database, with HAProxy (on the host) in front of them."""

    containers: list[image_tool.Container]
    ports: list[int]
    balancer: HAProxy
    demo: dict[str, Any]

    def base_url(self, index: int) -> str:
        return f"http://{LOOPBACK}:{self.ports[index]}"

    def ws_url(self, index: int) -> str:
        return f"ws://{LOOPBACK}:{self.ports[index]}/ws/"

    def token(self, name: str) -> str:
        return str(self.demo["users"][name]["token"])


def postgres_base_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        url = LOCAL_POSTGRES
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        service_unavailable(f"no PostgreSQL for the image's containers at {url}: {exc}")
    return url


@pytest.fixture(scope="module")
def image_deployment(
    image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ImageDeployment]:
    directory = tmp_path_factory.mktemp("image-deployment")
    database = IsolatedDatabase(postgres_base_url(), directory)
    database.create()
    containers: list[image_tool.Container] = []
    try:
        with service_running(RedisServer(log_dir=directory / "redis")) as redis:
            env = {
                "DATABASE_URL": database.url,
                "REDIS_URL": redis.url,
                "SECRET_KEY": secrets.token_urlsafe(50),
                "SECURE_COOKIES": "false",
                "DRAIN_DELAY_SECONDS": "1",
            }
            # Once per release, as the migrate job does, then the demo users and their tokens.
            image_tool.run_once("python", "manage.py", "migrate", "--noinput", env=env)
            demo = image_tool.run_once("python", "manage.py", "seed_demo", "--json", env=env)
            ports = [free_port(), free_port()]
            command = image_tool.image_command(image)
            for index, port in enumerate(ports, start=1):
                own = [
                    arg.replace("port=8000", f"port={port}").replace(
                        "interface=0.0.0.0", f"interface={LOOPBACK}"
                    )
                    for arg in command
                ]
                containers.append(
                    image_tool.Container(
                        name=container_name(f"instance-{index}"),
                        image=image,
                        env={**env, "INSTANCE_ID": f"image-{index}"},
                        network_host=True,
                        command=own,
                    ).start()
                )
            for container, port in zip(containers, ports, strict=True):
                container.wait_healthy(f"http://{LOOPBACK}:{port}")
            public, stats = free_port(), free_port()
            balancer = HAProxy(
                config_text=haproxy_render(
                    port=public,
                    stats_port=stats,
                    servers={"image-1": ports[0], "image-2": ports[1]},
                ),
                port=public,
                stats_port=stats,
                log_dir=directory / "haproxy",
            )
            with service_running(balancer):
                yield ImageDeployment(
                    containers=containers, ports=ports, balancer=balancer, demo=json.loads(demo)
                )
    finally:
        for container in containers:
            container.remove()
        database.drop()


@pytest.fixture
def bare_container(image: str) -> Iterator[image_tool.Container]:
    """A container of the image run with no settings at all, its port on loopback.

    Its root file system is read-only, /tmp included: a write anywhere but the /data volume
    fails, so the tests that use it show that /data is all the image needs."""
    container = image_tool.Container(
        name=container_name("bare"), image=image, publish=free_port(), read_only=True
    ).start()
    try:
        yield container
    finally:
        container.remove()


def published_url(container: image_tool.Container) -> str:
    assert container.publish is not None
    return f"http://{LOOPBACK}:{container.publish}"
