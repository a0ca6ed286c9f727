"""Where the time goes: a summary of the py-spy profiles ``run --profile DIR`` recorded.

Run: .venv/bin/python -m bench.e2e.profiles DIR
For each collapsed-stack file: the functions most often on top of the stack (self time) and
the project's and its libraries' frames most often anywhere on it (inclusive time).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

WATCHED = ("chat/", "connections/", "presence/", "channels/", "asgiref/", "django/db/", "daphne/")


def summarize(path: Path, *, top: int = 10) -> str:
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{path.stem}: {total} samples"]
    lines += [f"  self {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    ours = [(f, n) for f, n in inclusive.most_common() if any(w in f for w in WATCHED)]
    lines += [f"  incl {n / total:6.1%}  {frame}" for frame, n in ours[: top * 2]]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    for path in sorted(Path(argv[0]).glob("*.txt")):
        print(summarize(path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
