"""``PROCESSES=N``: one instance's port served by N Daphne processes (docs/scaling.md).

An instance is one event loop: Python runs it on one core, so a host (or a container given
several cores) with one process per port leaves the other cores to whatever else runs
there. When an instance dies, its clients come back to the survivors all at once, and a
survivor with one loop takes them at that one core's pace (docs/benchmarks.md, the crash
storm). With ``PROCESSES`` above 1, ``realtime_project.runtime.serve`` opens the listening
sockets itself and runs that many Daphne processes on them: each is an instance of its own to
the rest of the system (its own ``INSTANCE_ID``, registry entries, heartbeat, connect gate,
presence queue), and the kernel hands each new connection to whichever process accepts it
first, so a busy loop takes fewer.

This process only supervises:

- ``SIGTERM`` and ``SIGINT`` go to every child once, and each drains as a lone instance does
  (the children have a process group of their own, so a signal to this process's group is
  not delivered twice: a second ``SIGTERM`` hurries a drain); this process exits when the last
  child has, with the worst exit status among them;
- when this process dies without a chance to forward anything (``SIGKILL``), the kernel kills
  every child (``PR_SET_PDEATHSIG``): the instance crashed as one, as a lone one would;
- a child that dies on its own (a crash, the kernel's OOM killer) is started again under a
  new instance id (``<INSTANCE_ID>-p<k>r<n>``), so the dead one's registry entries are the
  reaper's, as any dead instance's are, and its clients come back to the port at once; a
  child that keeps dying within ``RESTART_WINDOW_SECONDS`` of its start is started again
  after a growing pause, so a bad configuration does not spin.
"""

from __future__ import annotations

import ctypes
import logging
import logging.config
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from realtime_project.runtime.logging import log_event

logger = logging.getLogger("realtime_project.runtime.processes")

# The child sees this set and serves instead of supervising.
CHILD_ENV = "REALTIME_PROCESS_INDEX"
RESTART_WINDOW_SECONDS = 5.0
RESTART_PAUSE_MAX_SECONDS = 30.0
LISTEN_BACKLOG_DEFAULT = 1024
PR_SET_PDEATHSIG = 1


class ProcessesError(Exception):
    """The command line cannot be served by several processes (said before anything starts)."""


@dataclass(frozen=True)
class Listener:
    """A TCP endpoint of Daphne's command line, opened here and handed to every child."""

    host: str
    port: int
    backlog: int

    def open(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(self.backlog)
        sock.set_inheritable(True)
        return sock


def _endpoint_listener(description: str) -> Listener | None:
    """``tcp:port=8000:interface=0.0.0.0:backlog=1024`` (or ``tcp:8000``); None for others."""
    kind, _, rest = description.partition(":")
    if kind == "tcp6":
        # Daphne's ``fd:`` endpoint adopts IPv4 sockets only.
        raise ProcessesError(f"PROCESSES > 1 serves IPv4 endpoints only, not {description!r}")
    if kind != "tcp":
        return None
    options: dict[str, str] = {}
    positional: list[str] = []
    for part in rest.split(":") if rest else []:
        name, eq, value = part.partition("=")
        if eq:
            options[name] = value
        else:
            positional.append(part)
    port = options.get("port", positional[0] if positional else "")
    if not port.isdigit():
        raise ProcessesError(f"endpoint {description!r} has no port")
    host = options.get("interface", "::" if kind == "tcp6" else "0.0.0.0")
    return Listener(host, int(port), int(options.get("backlog", LISTEN_BACKLOG_DEFAULT)))


def listeners_split(argv: list[str]) -> tuple[list[Listener], list[str]]:
    """Daphne's TCP endpoints (``-e tcp:...``, ``-b``/``-p``) out of its arguments; the rest."""
    listeners: list[Listener] = []
    rest: list[str] = []
    host: str | None = None
    port: int | None = None
    args = iter(argv)
    for arg in args:
        name, eq, inline = arg.partition("=")
        if name in ("-e", "--endpoint"):
            value = inline if eq else next(args, "")
            listener = _endpoint_listener(value)
            if listener is None:
                raise ProcessesError(f"PROCESSES > 1 serves TCP endpoints only, not {value!r}")
            listeners.append(listener)
        elif name in ("-b", "--bind"):
            host = inline if eq else next(args, "")
        elif name in ("-p", "--port"):
            port = int(inline if eq else next(args, "0"))
        elif name in ("-u", "--unix-socket", "--fd"):
            raise ProcessesError(f"PROCESSES > 1 serves TCP endpoints only, not {name}")
        else:
            rest.append(arg)
    if port is not None:
        listeners.append(Listener(host or "127.0.0.1", port, LISTEN_BACKLOG_DEFAULT))
    if not listeners:
        raise ProcessesError("PROCESSES > 1 needs a TCP endpoint (-e tcp:port=...) to open")
    return listeners, rest


@dataclass
class _Child:
    index: int
    generation: int
    process: subprocess.Popen[bytes]
    started: float
    quick_deaths: int = 0


@dataclass
class Supervisor:
    argv: list[str]
    processes: int
    base_id: str
    children: dict[int, _Child] = field(default_factory=dict)
    stopping: bool = False
    worst: int = 0

    def run(self) -> int:
        listeners, rest = listeners_split(self.argv)
        sockets = [listener.open() for listener in listeners]
        fds = [sock.fileno() for sock in sockets]
        self.child_argv = [
            *[arg for sock in sockets for arg in ("-e", f"fd:fileno={sock.fileno()}")],
            *rest,
        ]
        self.fds = tuple(fds)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._forward)
        for index in range(self.processes):
            self._start(index, generation=0, quick_deaths=0)
        log_event(
            logger,
            "processes_started",
            endpoints=",".join(f"{item.host}:{item.port}" for item in listeners),
            processes=self.processes,
        )
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            self._reap(pid, os.waitstatus_to_exitcode(status))
        for sock in sockets:
            sock.close()
        return self.worst

    def _child_id(self, index: int, generation: int) -> str:
        return f"{self.base_id}-p{index}" + (f"r{generation}" if generation else "")

    def _start(self, index: int, *, generation: int, quick_deaths: int) -> None:
        env = {
            **os.environ,
            CHILD_ENV: str(index),
            "INSTANCE_ID": self._child_id(index, generation),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "realtime_project.runtime.serve", *self.child_argv],
            env=env,
            pass_fds=self.fds,
            process_group=0,
            preexec_fn=_dies_with(os.getpid()),
        )
        self.children[process.pid] = _Child(
            index, generation, process, time.monotonic(), quick_deaths
        )

    def _reap(self, pid: int, code: int) -> None:
        child = self.children.pop(pid, None)
        if child is None:
            return
        child.process.returncode = code
        if self.stopping:
            # A child killed by the signal it was forwarded still stopped as asked.
            self.worst = max(self.worst, 0 if code in (-signal.SIGTERM, -signal.SIGINT) else code)
            return
        quick = time.monotonic() - child.started < RESTART_WINDOW_SECONDS
        deaths = child.quick_deaths + 1 if quick else 0
        log_event(
            logger,
            "process_restarted",
            level=logging.ERROR,
            index=child.index,
            exited_instance=self._child_id(child.index, child.generation),
            exit_code=code,
        )
        if deaths:
            pause = min(RESTART_PAUSE_MAX_SECONDS, 0.5 * 2 ** (deaths - 1))
            deadline = time.monotonic() + pause
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(min(0.1, deadline - time.monotonic()))
            if self.stopping:
                return
        self._start(child.index, generation=child.generation + 1, quick_deaths=deaths)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        for child in self.children.values():
            if child.process.poll() is None:
                child.process.send_signal(signum)


def _dies_with(parent: int) -> Callable[[], None]:
    """Run in the child before it executes: killed by the kernel when ``parent`` dies."""
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # it died before the request took effect
            os._exit(1)

    return arm


def processes_serve(argv: list[str], processes: int, base_id: str) -> int:
    """Serve Daphne's command line ``argv`` with ``processes`` children; their worst exit."""
    from django.conf import settings

    # The instance's own log configuration (LOG_FORMAT, LOG_LEVEL): Django is not set up here.
    logging.config.dictConfig(settings.LOGGING)
    return Supervisor(argv, processes, base_id).run()
