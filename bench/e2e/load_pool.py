"""Idle sockets held by several generator processes, for the memory ramp (docs/benchmarks.md).

One asyncio process opening 10,000 WebSocket handshakes is itself the slowest part of a ramp
against the bare echo, and its own fds count against one process's limit. ``GeneratorPool``
splits the accounts over N child processes (``python -m bench.e2e.load_pool``), account i to
process ``i % N``, each a ``LoadGenerator`` of its own; the parent tells them, step by step,
to open every socket whose account comes before the step's target, and waits for all of them.
The sockets stay open and idle (each child keeps reading them) until ``close``. The
handshakes in flight are split too, so the server sees the same concurrency as with one
process. Conversations are the accounts' own: both users of a conversation are connected,
in different processes, which an idle socket does not notice.

The protocol on a child's stdin/stdout is one JSON object a line: ``{"open": target}``
answered with ``{"sockets", "failed", "times_ms", "open", "errors"}``; ``{"close": true}``
answered with ``{"closed": n}``, after which the child exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.e2e.load import Account, ConnectStats, LoadGenerator, percentiles
from bench.e2e.targets import fd_limit_raise
from scripts.procs import REPO_ROOT

# A child that has not answered a step within this long is stuck; the ramp gives up.
STEP_TIMEOUT_SECONDS = 600.0


class GeneratorPool:
    """N generator processes holding ``accounts``' sockets, opened in steps."""

    def __init__(
        self,
        accounts: list[Account],
        *,
        processes: int,
        workdir: Path,
        echo: bool = False,
        concurrency: int = 100,
    ) -> None:
        self.accounts = accounts
        self.processes = max(1, min(processes, len(accounts)))
        self.workdir = workdir
        self.echo = echo
        self.concurrency = concurrency
        self.errors: Counter[str] = Counter()
        self.open_sockets = 0
        self.pids: dict[str, int] = {}
        self._children: list[asyncio.subprocess.Process] = []

    async def start(self) -> GeneratorPool:
        self.workdir.mkdir(parents=True, exist_ok=True)
        per_child = max(1, self.concurrency // self.processes)
        for n in range(self.processes):
            mine = [(i, asdict(a)) for i, a in enumerate(self.accounts) if i % self.processes == n]
            path = self.workdir / f"generator-{n}.json"
            path.write_text(json.dumps(mine))
            argv = [sys.executable, "-m", "bench.e2e.load_pool", str(path)]
            argv += ["--concurrency", str(per_child)] + (["--echo"] if self.echo else [])
            child = await asyncio.create_subprocess_exec(
                *argv,
                cwd=REPO_ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=2**26,  # a step's answer carries every handshake's time
            )
            self._children.append(child)
            self.pids[f"generator-{n}"] = child.pid
        return self

    async def _ask_all(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        async def ask(child: asyncio.subprocess.Process) -> dict[str, Any]:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write((json.dumps(command) + "\n").encode())
            await child.stdin.drain()
            line = await child.stdout.readline()
            if not line:
                raise RuntimeError(f"generator process {child.pid} exited ({child.returncode})")
            answer: dict[str, Any] = json.loads(line)
            return answer

        async with asyncio.timeout(STEP_TIMEOUT_SECONDS):
            return await asyncio.gather(*(ask(c) for c in self._children))

    async def open_upto(self, target: int) -> ConnectStats:
        """Open the sockets of accounts ``[0, target)`` that are not open yet."""
        started = time.perf_counter()
        answers = await self._ask_all({"open": target})
        seconds = time.perf_counter() - started
        sockets = sum(a["sockets"] for a in answers)
        self.open_sockets = sum(a["open"] for a in answers)
        self.errors = Counter()
        for answer in answers:
            self.errors.update(answer["errors"])
        return ConnectStats(
            sockets=sockets,
            failed=sum(a["failed"] for a in answers),
            seconds=round(seconds, 3),
            per_second=round(sockets / seconds, 1) if seconds else 0.0,
            latency_ms=percentiles([t for a in answers for t in a["times_ms"]]),
        )

    async def close(self) -> None:
        if self._children:
            await self._ask_all({"close": True})
        for child in self._children:
            try:
                async with asyncio.timeout(30):
                    await child.wait()
            except TimeoutError:
                child.kill()
                await child.wait()
        self._children = []
        self.open_sockets = 0


async def child_main(mine: list[tuple[int, Account]], *, echo: bool, concurrency: int) -> None:
    """A generator process: open sockets when told, hold them, close them when told."""
    gen = LoadGenerator([a for _, a in mine], echo=echo)
    index = [i for i, _ in mine]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        if command.get("close"):
            closed = gen.open_sockets
            await gen.close()
            _answer({"closed": closed})
            return
        target = int(command["open"])
        todo = [c for c, i in zip(gen.clients, index, strict=True) if i < target and c.ws is None]
        stats = await gen.connect(clients=todo, concurrency=concurrency)
        _answer(
            {
                "sockets": stats.sockets,
                "failed": stats.failed,
                "times_ms": gen.last_connect_times_ms,
                "open": gen.open_sockets,
                "errors": {k: v for k, v in gen.errors.items() if k.startswith("connect_")},
            }
        )
    await gen.close()  # the parent went away


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one process of a GeneratorPool")
    parser.add_argument("accounts", type=Path, help="JSON list of [index, account]")
    parser.add_argument("--echo", action="store_true")
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args(argv)
    mine = [(int(i), Account(**a)) for i, a in json.loads(args.accounts.read_text())]
    limit = fd_limit_raise()
    if limit < len(mine) + 64:
        print(f"generator {os.getpid()}: open-file limit {limit} is too low", file=sys.stderr)
        return 1
    asyncio.run(child_main(mine, echo=args.echo, concurrency=args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
