"""Markdown tables and ratios from the results of ``bench.e2e.run`` (docs/benchmarks.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TARGET_RATE_RATIO = 0.8
TARGET_MEMORY_RATIO = 1.3


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _cpu(item: dict[str, Any]) -> str:
    return " / ".join(f"{v:.0f}" for v in item.get("cpu_percent", {}).values())


def render(results: dict[str, Any]) -> str:
    if "soak" in results:
        return render_soak(results["soak"])
    if "storm" in results:
        return render_storm(results["storm"])
    if "overload" in results:
        return render_overload(results["overload"])
    out: list[str] = []
    echo = results.get("echo")
    layers: dict[str, Any] = results.get("layers", {})
    names = (["echo"] if echo else []) + list(layers)
    targets: dict[str, Any] = {**({"echo": echo} if echo else {}), **layers}

    rows = []
    for name in names:
        data = targets[name]
        mem = data["memory"]
        rows.append(
            [
                name,
                mem["connect"]["sockets"],
                mem["connect"]["failed"],
                mem["connect"]["per_second"],
                _ms(mem["connect"]["latency_ms_by_step"][-1]["p99"]),
                mem["kib_per_socket"],
                _ratio(mem["kib_per_socket"], echo["memory"]["kib_per_socket"] if echo else None),
            ]
        )
    out.append("Connect and idle memory\n")
    out.append(
        _table(
            [
                "target",
                "sockets",
                "failed",
                "connects/s",
                "connect p99 ms (last step)",
                "KiB per idle socket",
                "vs echo",
            ],
            rows,
        )
    )

    if any("saturation" not in data for data in targets.values()):
        return "\n".join(out)  # --memory: the ramp only
    rows = []
    echo_rate = echo["saturation"]["echo"]["delivered_per_s"] if echo else None
    for name in names:
        for kind, item in targets[name]["saturation"].items():
            lat = item["typing_latency_ms"] if kind == "typing" else item["latency_ms"]
            rows.append(
                [
                    f"{name} {kind}",
                    item["delivered_per_s"],
                    _ratio(item["delivered_per_s"], echo_rate),
                    _ms(lat["p50"]),
                    _ms(lat["p99"]),
                    _cpu(item),
                    item.get("redis_calls_per_delivery", "-"),
                    sum(item["errors"].values()),
                ]
            )
    out.append("\nFull speed (one frame in flight per socket)\n")
    out.append(
        _table(
            [
                "target, frames",
                "deliveries/s",
                "vs echo",
                "p50 ms",
                "p99 ms",
                "server CPU %",
                "Redis calls/delivery",
                "errors",
            ],
            rows,
        )
    )

    rows = []
    for name in names:
        for item in targets[name]["sweep"]:
            # The bulk of the frames: typing on the cluster, every echo on the bare server.
            lat = item["latency_ms"] if name == "echo" else item["typing_latency_ms"]
            msg = item["latency_ms"]
            rows.append(
                [
                    name,
                    f"{item['offered_per_s']:.0f}",
                    item["delivered_per_s"],
                    _ms(lat["p50"]),
                    _ms(lat["p95"]),
                    _ms(lat["p99"]),
                    "-" if name == "echo" else f"{_ms(msg['p50'])} / {_ms(msg['p99'])}",
                    _cpu(item),
                    item.get("redis_calls_per_frame", "-"),
                    sum(item["errors"].values()),
                ]
            )
    out.append("\nFixed rates (frames offered per second: typing plus a share of messages)\n")
    out.append(
        _table(
            [
                "target",
                "offered/s",
                "delivered/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "messages p50 / p99 ms",
                "server CPU %",
                "Redis calls/frame",
                "errors",
            ],
            rows,
        )
    )

    rows = []
    for name in names:
        tally = targets[name]["integrity"]
        rows.append(
            [
                name,
                tally["expected"],
                tally["lost"],
                tally["duplicate_events"],
                tally["duplicate_messages"],
                tally["unacked"],
            ]
        )
    out.append("\nEvery delivery accounted for (whole run)\n")
    out.append(
        _table(
            ["target", "deliveries owed", "lost", "dup event_id", "dup message", "unacked"], rows
        )
    )

    rows = []
    for name, data in layers.items():
        for action in ("connect", "disconnect"):
            trips = data["round_trips"][action]
            commands = ", ".join(f"{k} {v}" for k, v in sorted(trips["commands"].items()))
            rows.append(
                [
                    name,
                    action,
                    trips["round_trips"],
                    trips["round_trips_with_pings"],
                    trips["round_trips_seen"],
                    commands,
                ]
            )
    if rows:
        out.append("\nRedis round trips for one connect / disconnect, nothing else running\n")
        out.append(
            _table(
                [
                    "layer",
                    "action",
                    "round trips",
                    "with idle-link PINGs",
                    "all trials",
                    "commands (calls)",
                ],
                rows,
            )
        )

    out.append("\nRatios\n")
    out.append(_ratios(echo, layers))
    return "\n".join(out)


def _ratios(echo: dict[str, Any] | None, layers: dict[str, Any]) -> str:
    lines = []
    ours, theirs = layers.get("realtime"), layers.get("pubsub")
    if echo and ours:
        echo_rate = echo["saturation"]["echo"]["delivered_per_s"]
        for kind in ("typing", "message"):
            rate = ours["saturation"][kind]["delivered_per_s"]
            lines.append(
                f"- cross-instance {kind} deliveries / bare echo: {_ratio(rate, echo_rate)} "
                f"(target >= {TARGET_RATE_RATIO}x)"
            )
        lines.append(
            "- memory per idle socket / bare echo: "
            f"{_ratio(ours['memory']['kib_per_socket'], echo['memory']['kib_per_socket'])} "
            f"(target <= {TARGET_MEMORY_RATIO}x)"
        )
    if ours and theirs:
        for kind in ("typing", "message"):
            lines.append(
                f"- {kind} deliveries/s, this layer / channels_redis pubsub: "
                + _ratio(
                    ours["saturation"][kind]["delivered_per_s"],
                    theirs["saturation"][kind]["delivered_per_s"],
                )
            )
        lines.append(
            "- KiB per idle socket, this layer / channels_redis pubsub: "
            + _ratio(ours["memory"]["kib_per_socket"], theirs["memory"]["kib_per_socket"])
        )
    return "\n".join(lines)


def render_soak(soak: dict[str, Any]) -> str:
    first, last = soak["curve"][0], soak["curve"][-1]
    rows = [
        [name, first["rss_kib"][name] // 1024, last["rss_kib"][name] // 1024]
        for name in first["rss_kib"]
    ]
    tally = soak["integrity"]
    return "\n".join(
        [
            f"Soak: {soak['sockets']} sockets, {soak['seconds']:.0f} s, "
            f"{soak['message_rate']:.0f} messages/s + {soak['typing_rate']:.0f} typing/s, "
            f"{soak['delivered']} deliveries",
            "",
            _table(["instance", "RSS MiB at start", "RSS MiB at end"], rows),
            "",
            f"errors: {soak['errors'] or 'none'}; sockets closed by the server: "
            f"{soak['closed_unexpectedly']}; lost {tally['lost']} of {tally['expected']}, "
            f"duplicates {tally['duplicate_events']} (event_id) / "
            f"{tally['duplicate_messages']} (message)",
        ]
    )


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text())))


def render_storm(storm: dict[str, Any]) -> str:
    ping = storm["survivor_ping_ms"]
    own = storm.get("survivor_ping_ms_own_process") or {}
    rows = [
        [name, ping[name]["pings"], _ms(ping[name]["p50"]), _ms(ping[name]["p99"])]
        + (
            [own[name]["pings"], _ms(own[name].get("p50")), _ms(own[name].get("p99"))]
            if own
            else []
        )
        for name in ("before", "during", "after")
    ]
    ping_header = ["window", "pings", "p50 ms", "p99 ms"]
    if own:
        ping_header = [
            "window", "pings (storm's process)", "p50 ms", "p99 ms",
            "pings (a process of its own)", "p50 ms", "p99 ms",
        ]  # fmt: skip
    tally = storm["integrity"]
    lines = [
        f"Reconnect storm: {storm['killed_sockets']} of {storm['sockets']} sockets killed "
        f"(SIGKILL), {storm['survivor_sockets']} on the survivor"
        + (", coming back through HAProxy" if storm.get("via_haproxy") else ""),
        f"resumed on the survivor: {storm['resumed']} ({storm['resumed_within_10s']} within 10 s),"
        f" all back after {storm['all_back_seconds']} s; resume p50/p99 "
        f"{storm['resume_seconds']['p50']} / {storm['resume_seconds']['p99']} s; "
        f"every resume recovered: {storm['recovered_all']}",
        f"connect attempts {storm['attempts']}, shed with 1013: {storm['shed_1013']}, "
        f"other failures: {storm['failed_other']}",
        f"resumed within 5 s: {storm.get('resumed_within_5s')}; 1013 answered after p99 "
        f"{_ms((storm.get('shed_answer_ms') or {}).get('p99'))} ms; retry hints p50/max "
        f"{(storm.get('retry_hint_ms') or {}).get('p50')} / "
        f"{(storm.get('retry_hint_ms') or {}).get('max')} ms",
        "",
        "Survivor's own sockets, ping round trip",
        _table(ping_header, rows),
        "",
        f"deliveries owed {tally['expected']}, lost {tally['lost']}, duplicates "
        f"{tally['duplicate_events']} / {tally['duplicate_messages']}, unacked {tally['unacked']}",
    ]
    balancer = storm.get("balancer_refusals")
    if balancer:
        lines.append(
            f"refused by HAProxy: {balancer['refusals']}, answered p99 "
            f"{_ms(balancer['answer_ms'].get('p99'))} / max "
            f"{_ms(balancer['answer_ms'].get('max'))} ms (its log)"
        )
    closed = storm.get("mass_close")
    if closed:
        lines.append(
            f"mass close: {closed['entries_before']} registry entries, {closed['entries_left']} "
            f"left, emptied after {closed['emptied_seconds']} s, pool errors logged "
            f"{closed['pool_errors_logged']}, health {closed['health']}"
        )
    return "\n".join(lines)


def render_overload(overload: dict[str, Any]) -> str:
    rows = [
        [
            run["offered"],
            run["connected"],
            run["all_connected_seconds"],
            run["completed_per_second"],
            run["attempts"],
            run["shed_1013"],
            run["unanswered"],
            f"{run['answered_within_1s']} / {run['attempts']}",
            _ms(run["answer_ms"]["p99"]),
            _ms(run["answer_ms"]["max"]),
        ]
        for run in overload.values()
    ]
    header = [
        "offered",
        "connected",
        "all in s",
        "completed/s",
        "attempts",
        "1013",
        "unanswered",
        "answered within 1 s",
        "answer p99 ms",
        "max ms",
    ]
    text = "Overload: clients connecting at once to one instance\n\n" + _table(header, rows)
    balancer = [
        f"{run['offered']}: {b['refusals']} refused by HAProxy, answered p99 "
        f"{_ms(b['answer_ms'].get('p99'))} / max {_ms(b['answer_ms'].get('max'))} ms (its log)"
        for run in overload.values()
        if (b := run.get("balancer_refusals"))
    ]
    return text + ("\n\n" + "\n".join(balancer) if balancer else "")
