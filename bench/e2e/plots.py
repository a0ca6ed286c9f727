"""Figures for docs/benchmarks.md from the results ``bench.e2e.run`` wrote.

Run: .venv/bin/python -m bench.e2e.plots [RESULTS.json [OUT_DIR]]  (matplotlib, from
requirements-bench.txt)
Writes docs/bench/e2e-latency.png, e2e-memory.png, e2e-full-speed.png and, when a soak was
run, e2e-soak.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from scripts.procs import REPO_ROOT

OUT_DIR = REPO_ROOT / "docs" / "bench"
COLORS = {"echo": "#7f7f7f", "realtime": "#1f77b4", "pubsub": "#d62728"}
LABELS = {
    "echo": "bare Daphne echo",
    "realtime": "this project (custom layer)",
    "pubsub": "channels_redis pubsub layer",
}


def _targets(results: dict[str, Any]) -> dict[str, Any]:
    found = {"echo": results["echo"]} if "echo" in results else {}
    found.update(results.get("layers", {}))
    return found


def plot_latency(results: dict[str, Any], out: Path) -> None:
    fig, (lat_ax, rate_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"p50": "-", "p95": "--", "p99": ":"}
    for name, data in _targets(results).items():
        sweep = data["sweep"]
        offered = [p["offered_per_s"] for p in sweep]
        key = "latency_ms" if name == "echo" else "typing_latency_ms"
        for pct, style in styles.items():
            values = [p[key][pct] for p in sweep]
            lat_ax.plot(
                offered,
                values,
                style,
                marker="o",
                ms=3,
                color=COLORS[name],
                label=f"{LABELS[name]} {pct}" if pct == "p50" else f"{pct}",
            )
        rate_ax.plot(
            offered,
            [p["delivered_per_s"] for p in sweep],
            marker="o",
            color=COLORS[name],
            label=LABELS[name],
        )
    lat_ax.set_yscale("log")
    lat_ax.set_xlabel("frames offered per second")
    lat_ax.set_ylabel("sender to receiver (ms); echo: round trip")
    lat_ax.set_title("Latency p50 (solid), p95 (dashed), p99 (dotted)")
    lat_ax.grid(True, which="both", alpha=0.3)
    handles, labels = lat_ax.get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels, strict=True) if "p50" in lab]
    lat_ax.legend([h for h, _ in keep], [lab for _, lab in keep], fontsize=8)
    top = max(p["offered_per_s"] for d in _targets(results).values() for p in d["sweep"])
    rate_ax.plot([0, top], [0, top], color="black", lw=0.6, alpha=0.5, label="offered")
    rate_ax.set_xlabel("frames offered per second")
    rate_ax.set_ylabel("events delivered per second")
    rate_ax.set_title("Delivered vs offered (cross-instance, 2 instances)")
    rate_ax.grid(True, alpha=0.3)
    rate_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_memory(results: dict[str, Any], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, data in _targets(results).items():
        points = data["memory"]["points"]
        processes = list(points[0]["rss_kib"])
        base = sum(points[0]["rss_kib"].values()) / len(processes)
        xs = [p["sockets"] / len(processes) for p in points]
        ys = [(sum(p["rss_kib"].values()) / len(processes) - base) / 1024 for p in points]
        per = data["memory"]["kib_per_socket"]
        ax.plot(
            xs, ys, marker="o", color=COLORS[name], label=f"{LABELS[name]}: {per:.0f} KiB/socket"
        )
    ax.set_xlabel("idle authenticated sockets per server process")
    ax.set_ylabel("RSS above the idle process (MiB)")
    ax.set_title("Memory per socket (mean of the instances)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_full_speed(results: dict[str, Any], out: Path) -> None:
    bars: list[tuple[str, float, str]] = []
    for name, data in _targets(results).items():
        for kind, item in data["saturation"].items():
            label = LABELS[name] if name == "echo" else f"{LABELS[name]}\n{kind}"
            bars.append((label, item["delivered_per_s"], COLORS[name]))
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.barh(
        [b[0] for b in bars][::-1], [b[1] for b in bars][::-1], color=[b[2] for b in bars][::-1]
    )
    for index, (_, value, _) in enumerate(bars[::-1]):
        ax.text(value, index, f" {value:,.0f}", va="center", fontsize=8)
    ax.set_xlabel("deliveries per second, one frame in flight per socket")
    ax.set_title("Full speed: cross-instance deliveries vs one bare Daphne echoing")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_soak(soak: dict[str, Any], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    curve = soak["curve"]
    for name in curve[0]["rss_kib"]:
        ax.plot(
            [p["t"] / 60 for p in curve], [p["rss_kib"][name] / 1024 for p in curve], label=name
        )
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(
        f"Soak: {soak['sockets']} sockets, {soak['message_rate']:.0f} messages/s "
        f"+ {soak['typing_rate']:.0f} typing/s"
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    source = Path(args[0]) if args else OUT_DIR / "e2e-results.json"
    results = json.loads(source.read_text())
    out_dir = Path(args[1]) if len(args) > 1 else OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if "layers" in results:
        for name, draw in (
            ("e2e-latency.png", plot_latency),
            ("e2e-memory.png", plot_memory),
            ("e2e-full-speed.png", plot_full_speed),
        ):
            draw(results, out_dir / name)
            written.append(name)
    soak_path = source.with_name("e2e-soak.json")
    soak = results.get("soak") or (
        json.loads(soak_path.read_text()).get("soak") if soak_path.exists() else None
    )
    if soak:
        plot_soak(soak, out_dir / "e2e-soak.png")
        written.append("e2e-soak.png")
    print("wrote", ", ".join(str(out_dir / n) for n in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
