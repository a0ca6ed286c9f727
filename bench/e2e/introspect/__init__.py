"""What a server process's memory is made of, from inside, at each step of the memory ramp.

``bench.e2e.run --memory --introspect`` starts the instances (and the echo) with
``sitecustomize`` from this directory on their PYTHONPATH; at each point of the ramp the
bench asks each of them (``Introspector.take``: a label in a file, then SIGUSR1) to write a
report, and waits for it. A report holds /proc/self/smaps_rollup (anonymous against file
pages), the thread count, pymalloc's arenas (``sys._debugmallocstats``), glibc malloc's
totals over every arena (``mallinfo2``) and each arena's (``malloc_stats``), the
collector's object counts (by type with ``BENCH_INTROSPECT_TYPES=N`` in the bench's
environment), and tracemalloc's traced heap when it traces (``--tracemalloc``). Nothing
here is the product's; it is loaded only by the bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPORT_TIMEOUT_SECONDS = 60.0


MALLINFO2_FIELDS = (
    "arena",  # bytes obtained with brk/sbrk and in the other arenas' heaps
    "ordblks",
    "smblks",
    "hblks",
    "hblkhd",  # bytes in mmap'ed blocks (large allocations)
    "usmblks",
    "fsmblks",
    "uordblks",  # bytes in use
    "fordblks",  # bytes free inside the arenas
    "keepcost",
)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2_FIELDS]


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send the C-level stderr (fd 2) to ``path`` for the block: where CPython's and glibc's
    statistics are printed."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "wb") as handle:
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _kib_fields(text: str) -> dict[str, int]:
    return {
        m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+):\s+(\d+) kB", text, re.MULTILINE)
    }


def _pymalloc(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, pattern in {
        "arenas_current": r"# arenas allocated current\s*=\s*([\d,]+)",
        "arenas_highwater": r"# arenas highwater mark\s*=\s*([\d,]+)",
        "bytes_in_allocated_blocks": r"# bytes in allocated blocks\s*=\s*([\d,]+)",
        "bytes_in_available_blocks": r"# bytes in available blocks\s*=\s*([\d,]+)",
        "bytes_in_unused_pools": r"unused pools \* \d+ bytes\s*=\s*([\d,]+)",
        "bytes_lost_to_pool_headers": r"# bytes lost to pool headers\s*=\s*([\d,]+)",
        "bytes_lost_to_quantization": r"# bytes lost to quantization\s*=\s*([\d,]+)",
        "bytes_lost_to_arena_alignment": r"# bytes lost to arena alignment\s*=\s*([\d,]+)",
        "total": r"^Total\s*=\s*([\d,]+)",
    }.items():
        found = re.search(pattern, text, re.MULTILINE)
        if found:
            out[key] = int(found.group(1).replace(",", ""))
    return out


def _arenas(text: str) -> list[dict[str, int]]:
    """``malloc_stats``' system and in-use bytes of each glibc arena (one a thread, up to
    8 a core)."""
    found = re.findall(
        r"^Arena \d+:\nsystem bytes\s*=\s*(\d+)\nin use bytes\s*=\s*(\d+)", text, re.M
    )
    return [{"system": int(system), "in_use": int(in_use)} for system, in_use in found]


def _types(top: int) -> list[dict[str, Any]]:
    """The collector's objects by type, most numerous first: count and ``getsizeof`` bytes
    (an instance's ``__dict__`` apart, where it has one: reading it makes it, so this is for
    a diagnostic run, ``BENCH_INTROSPECT_TYPES=N``)."""
    counts: dict[type, list[int]] = {}
    for obj in gc.get_objects():
        kind = type(obj)
        row = counts.get(kind)
        if row is None:
            has_dict = int(not issubclass(kind, type) and hasattr(kind, "__dictoffset__"))
            row = counts[kind] = [0, 0, 0, has_dict and int(kind.__dictoffset__ != 0)]
        row[0] += 1
        row[1] += sys.getsizeof(obj)
        if row[3] and (own := getattr(obj, "__dict__", None)) is not None:
            row[2] += sys.getsizeof(own)
    ranked = sorted(counts.items(), key=lambda item: -item[1][0])[:top]
    return [
        {"type": f"{k.__module__}.{k.__qualname__}", "count": c, "bytes": b, "dict_bytes": d}
        for k, (c, b, d, _) in ranked
    ]


def report(with_tracemalloc_top: int = 80) -> dict[str, Any]:
    """This process's memory, as it sees it now."""
    smaps = _kib_fields(Path("/proc/self/smaps_rollup").read_text())
    status = Path("/proc/self/status").read_text()
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE).group(1))  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory() as tmp:
        py_path, c_path = Path(tmp) / "py.txt", Path(tmp) / "c.txt"
        with _stderr_to(py_path):
            sys._debugmallocstats()
        libc = ctypes.CDLL("libc.so.6")
        with _stderr_to(c_path):
            libc.malloc_stats()
        py_text, c_text = py_path.read_text(), c_path.read_text()
    with_types_top = int(os.environ.get("BENCH_INTROSPECT_TYPES", "0"))
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    out: dict[str, Any] = {
        "pid": os.getpid(),
        "time": time.time(),
        "smaps_rollup_kib": smaps,
        "threads": threads,
        "pymalloc": _pymalloc(py_text),
        "glibc": {name: getattr(info, name) for name in MALLINFO2_FIELDS},
        "glibc_arenas": len(re.findall(r"^Arena \d+:", c_text, re.MULTILINE)),
        "glibc_by_arena": _arenas(c_text),
        "types": _types(with_types_top) if with_types_top else [],
        "gc": {
            "objects": len(gc.get_objects()),
            "frozen": gc.get_freeze_count(),
            "counts": gc.get_count(),
        },
    }
    import tracemalloc

    if tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        top = snapshot.statistics("lineno")[:with_tracemalloc_top]
        out["tracemalloc"] = {
            "traced_bytes": current,
            "peak_bytes": peak,
            "overhead_bytes": tracemalloc.get_tracemalloc_memory(),
            "top": [
                {"where": str(s.traceback[0]), "bytes": s.size, "blocks": s.count} for s in top
            ],
        }
    return out


def report_write(directory: str) -> None:
    """The signal handler's work: the report named by the label the bench left."""
    base = Path(directory)
    request = base / f"{os.getpid()}.request"
    label = request.read_text().strip() if request.exists() else str(int(time.time()))
    target = base / f"{os.getpid()}.{label}.json"
    partial = target.with_suffix(".part")
    try:
        written = report()
    except Exception as exc:  # the bench waits for a report: an error is one
        written = {"pid": os.getpid(), "error": repr(exc)}
    partial.write_text(json.dumps(written))
    partial.rename(target)


def instance_env(directory: Path, *, trace: bool) -> dict[str, str]:
    """What a server process needs in its environment to answer ``Introspector.take``."""
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "BENCH_INTROSPECT_DIR": str(directory)}
    if trace:
        env["BENCH_TRACEMALLOC"] = "1"
    return env


class Introspector:
    """Asks server processes for a report at each point of a ramp, and keeps them."""

    def __init__(self, directory: Path, pids: dict[str, int]) -> None:
        self.directory = directory
        self.pids = pids
        self.reports: list[dict[str, Any]] = []

    async def take(self, sockets: int) -> None:
        point: dict[str, Any] = {"sockets": sockets}
        for name, pid in self.pids.items():
            point[name] = await _when_written(_ask(self.directory, pid, f"s{sockets}"))
        self.reports.append(point)


async def _when_written(target: Path) -> dict[str, Any] | None:
    """The report once the process has written it (None at the deadline)."""
    deadline = time.monotonic() + REPORT_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if (written := _read_if_written(target)) is not None:
            return written
        await asyncio.sleep(0.05)
    return None


def _read_if_written(target: Path) -> dict[str, Any] | None:
    if not target.exists():
        return None
    written: dict[str, Any] = json.loads(target.read_text())
    return written


def _ask(directory: Path, pid: int, label: str) -> Path:
    """Leave the label for ``pid``'s next report and signal it; where the report will be."""
    (directory / f"{pid}.request").write_text(label)
    os.kill(pid, signal.SIGUSR1)
    return directory / f"{pid}.{label}.json"
