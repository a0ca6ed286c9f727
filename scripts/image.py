"""The image, made and run locally with podman: ``scripts/image [--rebuild-base]``.

See docs/deploy.md. No container registry is reachable from the machines this project is
built on, so the ``python:3.11-slim`` the Dockerfile starts ``FROM`` is stood in for by a base
made here from Debian's packages (``mmdebstrap`` with the machine's own apt sources): Python
3.11 in a virtual environment at ``/usr/local``, where the official image keeps its Python.
The base is kept in podman's storage and made again only when its recipe changes. The
Dockerfile itself is built unchanged. The tests (tests/image/) run the result through
``Container``.

The podman settings these hosts need are in ``deploy/podman/containers.conf`` (``runc`` and
cgroupfs: ``crun`` refuses hybrid cgroups; explicit ulimits: podman's defaults cannot be set
without CAP_SYS_RESOURCE), used through ``CONTAINERS_CONF``.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in {None, ""}:  # run as a file: make ``scripts.procs`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.procs import REPO_ROOT, ServiceUnavailable, http_get, wait_until

IMAGE = "realtime:latest"
# The name the Dockerfile's FROM asks for; podman keeps a local image under localhost/.
BASE_IMAGE = "python:3.11-slim"
CONTAINERS_CONF = REPO_ROOT / "deploy" / "podman" / "containers.conf"
BASE_PACKAGES = ["python3", "python3-venv", "ca-certificates", "passwd"]
# What the official slim image leaves out too: manuals, docs (their copyrights stay), locales.
BASE_DPKG_OPTIONS = [
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
]
# /usr merged by symlinks as debootstrap (and the official image) does it, so that apt need not
# install `usrmerge`, which would bring the whole of Perl (~47 MB) into the image.
BASE_HOOK_DIR = "/usr/share/mmdebstrap/hooks/merged-usr"
# The official image's Python lives in /usr/local; a venv there gives the same `python` and
# `pip` on PATH, and lets pip install without touching Debian's own packages.
BASE_HOOK = 'chroot "$1" python3 -m venv /usr/local'
BASE_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
]
RECIPE_LABEL = "realtime.base-recipe"
APT_SOURCES = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PIP_CONFIG_FILES = [Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf")]
# pip options whose values may name files or folders on this machine.
PIP_PATH_OPTIONS = [
    "cert",
    "constraint",
    "requirement",
    "find-links",
    "index-url",
    "extra-index-url",
]


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman_binary() -> str:
    path = shutil.which("podman")
    if path is None:
        raise ServiceUnavailable("podman is not installed (apt-get install podman runc)")
    # Rootless podman needs subordinate uid ranges and newuidmap, and mmdebstrap's chroot
    # mode needs root: neither is set up here.
    if os.geteuid() != 0:
        raise ServiceUnavailable("scripts/image builds and runs the image as root only")
    return path


def podman(
    *args: str, check: bool = True, timeout: float = 120, capture: bool = True
) -> subprocess.CompletedProcess[str]:
    """``podman ARGS`` with this project's containers.conf."""
    result = subprocess.run(
        [podman_binary(), *args],
        env=podman_env(),
        capture_output=capture,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result


# -- the base image ----------------------------------------------------------------------------


def debian_suite() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value:
            return value.strip('"')
    raise ServiceUnavailable("cannot tell this machine's Debian release from /etc/os-release")


def apt_sources() -> list[Path]:
    """The machine's own apt sources (its mirror, whatever it is), enabled files only."""
    return [p for p in APT_SOURCES if p.is_file() and p.suffix in {".list", ".sources"}]


def base_recipe() -> str:
    """A digest of what makes the base: a change to any of it makes the base again."""
    recipe = [
        debian_suite(), *BASE_PACKAGES, *BASE_DPKG_OPTIONS, BASE_HOOK_DIR, BASE_HOOK,
        *BASE_CHANGES,
    ]  # fmt: skip
    return hashlib.sha256("\n".join(recipe).encode()).hexdigest()[:16]


def base_is_current() -> bool:
    found = podman(
        "image", "inspect", "--format", f'{{{{index .Labels "{RECIPE_LABEL}"}}}}', BASE_IMAGE,
        check=False,
    )  # fmt: skip
    return found.returncode == 0 and found.stdout.strip() == base_recipe()


def build_base(*, log: Path | None = None) -> None:
    """Debian's minimal system with Python, imported into podman under the FROM name."""
    if shutil.which("mmdebstrap") is None:
        raise ServiceUnavailable("mmdebstrap is not installed (apt-get install mmdebstrap)")
    sources = apt_sources()
    if not sources:
        raise ServiceUnavailable("no apt sources on this machine for mmdebstrap to use")
    with tempfile.TemporaryDirectory(prefix="realtime-base-") as work:
        rootfs = Path(work) / "rootfs.tar"
        argv = [
            "mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
            *(f"--dpkgopt={option}" for option in BASE_DPKG_OPTIONS),
            f"--hook-dir={BASE_HOOK_DIR}", f"--customize-hook={BASE_HOOK}",
            debian_suite(), str(rootfs), *map(str, sources),
        ]  # fmt: skip
        _run_logged(argv, log=log, timeout=1200)
        changes = [*BASE_CHANGES, f"LABEL {RECIPE_LABEL}={base_recipe()}"]
        podman(
            "import", *(arg for change in changes for arg in ("--change", change)),
            str(rootfs), BASE_IMAGE, timeout=600,
        )  # fmt: skip


# -- the image ---------------------------------------------------------------------------------


def _pip_config_files() -> list[tuple[Path, str]]:
    """(file on this machine, where pip looks for it in the build) for each pip config."""
    files = [(p, str(p)) for p in PIP_CONFIG_FILES if p.is_file()]
    user = Path.home() / ".config" / "pip" / "pip.conf"
    if user.is_file():
        files.append((user, "/root/.config/pip/pip.conf"))
    named = os.environ.get("PIP_CONFIG_FILE")
    if named and Path(named).is_file():
        files.append((Path(named), "/etc/pip.conf"))
    return files


def _local_paths(value: str) -> list[Path]:
    paths = []
    for item in value.split():
        path = Path(item.removeprefix("file://"))
        if path.is_absolute() and path.exists():
            paths.append(path)
    return paths


def build_mounts() -> list[str]:
    """Read-only ``-v`` mounts for the build alone: the host's CA bundle, its pip configuration
    and the local files and indexes that configuration names. Nothing of it enters a layer."""
    mounts: dict[str, str] = {}
    if CA_BUNDLE.is_file():
        mounts[str(CA_BUNDLE)] = str(CA_BUNDLE)
    for path, target in _pip_config_files():
        mounts[str(path)] = target
        config = configparser.ConfigParser(interpolation=None)
        with contextlib.suppress(configparser.Error, OSError):
            config.read(path)
        for section in config.sections():
            for option in PIP_PATH_OPTIONS:
                for local in _local_paths(config.get(section, option, fallback="")):
                    # A local index (.../simple) links to its files beside it.
                    if option.endswith("index-url"):
                        local = local.parent
                    mounts.setdefault(str(local), str(local))
    return [arg for source, target in mounts.items() for arg in ("-v", f"{source}:{target}:ro")]


def build_image(*, tag: str = IMAGE, log: Path | None = None) -> None:
    argv = [
        podman_binary(), "build", "--pull=never", "--network", "host", "--format", "docker",
        *build_mounts(), "-t", tag, "-f", str(REPO_ROOT / "Dockerfile"), str(REPO_ROOT),
    ]  # fmt: skip
    _run_logged(argv, log=log, timeout=1800, env=podman_env())


def image_size_bytes(tag: str = IMAGE) -> int:
    found = podman("image", "inspect", "--format", "{{.Size}}", tag)
    return int(found.stdout.strip())


def _run_logged(
    argv: Sequence[str], *, log: Path | None, timeout: float, env: Mapping[str, str] | None = None
) -> None:
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("ab")) if log is not None else None
        result = subprocess.run(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        where = f" (log: {log})" if log is not None else ""
        raise RuntimeError(f"{argv[0]} {argv[1]} failed with {result.returncode}{where}")


def make(*, rebuild_base: bool = False, log: Path | None = None) -> dict[str, float]:
    """The base (unless current) and the image; the seconds each took."""
    podman_binary()
    timings: dict[str, float] = {}
    if rebuild_base or not base_is_current():
        started = time.monotonic()
        build_base(log=log)
        timings["base_seconds"] = time.monotonic() - started
    started = time.monotonic()
    build_image(log=log)
    timings["build_seconds"] = time.monotonic() - started
    return timings


# -- running it --------------------------------------------------------------------------------


class Container:
    """One container of the image, detached, stopped and removed (with its volume) by ``remove``.

    ``publish`` maps a loopback port to the image's 8000; ``network_host`` shares the host's
    network instead (to reach a redis-server or PostgreSQL on 127.0.0.1), and ``command``
    then moves Daphne to its own port. ``read_only`` leaves the volumes (``/data``) the only
    writable places: not even a /tmp.
    """

    def __init__(
        self,
        *,
        name: str,
        image: str = IMAGE,
        env: Mapping[str, str] | None = None,
        publish: int | None = None,
        network_host: bool = False,
        command: Sequence[str] = (),
        read_only: bool = False,
    ) -> None:
        self.name = name
        self.read_only = read_only
        self.image = image
        self.env = dict(env or {})
        self.publish = publish
        self.network_host = network_host
        self.command = list(command)

    def start(self) -> Container:
        argv = ["run", "--detach", "--name", self.name]
        if self.publish is not None:
            argv += ["--publish", f"127.0.0.1:{self.publish}:8000"]
        if self.network_host:
            argv += ["--network", "host"]
        if self.read_only:
            argv += ["--read-only", "--read-only-tmpfs=false"]
        for key, value in self.env.items():
            argv += ["--env", f"{key}={value}"]
        podman(*argv, self.image, *self.command)
        return self

    def inspect(self) -> dict[str, Any]:
        found = podman("container", "inspect", self.name)
        data: list[dict[str, Any]] = json.loads(found.stdout)
        return data[0]

    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])

    def wait_healthy(self, base_url: str, timeout: float = 90) -> dict[str, Any]:
        def healthy() -> dict[str, Any] | None:
            if not self.running():
                raise RuntimeError(f"{self.name} exited:\n{self.logs()}")
            status, body = http_get(f"{base_url}/api/health", timeout=2.0)
            return json.loads(body) if status == 200 else None

        result: dict[str, Any] = wait_until(
            healthy, timeout=timeout, interval=0.25, what=f"{self.name} healthy"
        )
        return result

    def exec(self, *argv: str) -> str:
        return podman("exec", self.name, *argv).stdout

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, SIGKILL after ``timeout``; the exit code."""
        podman("stop", "--time", str(int(timeout)), self.name, timeout=timeout + 30)
        return int(self.inspect()["State"]["ExitCode"])

    def logs(self) -> str:
        found = podman("logs", self.name, check=False)
        return (found.stdout + found.stderr)[-6000:]

    def remove(self) -> None:
        podman("rm", "--force", "--volumes", "--time", "0", self.name, check=False)


def run_once(
    *command: str, env: Mapping[str, str], image: str = IMAGE, timeout: float = 300
) -> str:
    """A one-off container on the host's network (``manage.py migrate``, as a release job
    runs it); its stdout."""
    argv = ["run", "--rm", "--network", "host"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    return podman(*argv, image, *command, timeout=timeout).stdout


def image_command(image: str = IMAGE) -> list[str]:
    """The image's CMD, as the image holds it."""
    found = podman("image", "inspect", "--format", "{{json .Config.Cmd}}", image)
    command: list[str] = json.loads(found.stdout)
    return command


# -- the command line --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/image", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rebuild-base", action="store_true", help="make the base image again even if current"
    )
    args = parser.parse_args(argv)
    timings = make(rebuild_base=args.rebuild_base)
    size = image_size_bytes()
    seconds = {key: round(value, 1) for key, value in timings.items()}
    print(json.dumps({"image": IMAGE, "size_mb": round(size / 1e6, 1), **seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
