"""What the database committed, and what each socket owed, lost, duplicated or reordered.

The database is the source of truth (docs/protocol.md, "Delivery"): a conversation's durable
events are ``1..last_seq``, read back with ``GET /api/conversations/{id}/events?after_seq=N``.
Against that log, each socket of a ``DeliveryClient`` is judged as the contract states it:

- **owed**: every event with a higher seq than the position the socket resumed from, up to
  the conversation's ``last_seq`` for a socket still open at the end, or up to the highest seq
  it received for a socket that closed (the next socket resumes the rest), except the events
  the socket caused itself (it got their ``ack``);
- **lost**: owed and never received (for a closed socket: a hole below what it received);
- **duplicated**: a seq, or an ``event_id``, received more than once on one socket;
- **out of order**: after the resume ack, a seq lower than one already received;
- **mismatched**: a seq received with another ``event_id`` than the committed event's, or
  another type (the replay must send exactly what the live delivery sent).

Across a client's sockets, every committed event above the client's first position must be
held at the end (``client_lost``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chat.event_types import EventSchemaError, event_check
from tests.support.delivery_client import DeliveryClient, SocketRecord
from tests.support.frames import Frame
from tests.support.rest import rest_call


@dataclass
class CommittedLog:
    """One conversation's durable events as the database holds them."""

    conversation_id: str
    last_seq: int
    by_seq: dict[int, Frame]
    problems: list[str] = field(default_factory=list)  # gaps, repeats: the log itself is wrong


def committed_log(base_url: str, *, token: str, conversation_id: str) -> CommittedLog:
    """Every event of the conversation, page by page, checked gapless and each once."""
    frames: list[Frame] = []
    after, last_seq = 0, 0
    while True:
        status, body = rest_call(
            base_url,
            "GET",
            f"/api/conversations/{conversation_id}/events?after_seq={after}",
            token=token,
        )
        if status != 200:
            raise AssertionError(f"events of {conversation_id}: {status} {body}")
        page = body["events"]
        last_seq = int(body["last_seq"])
        frames.extend(page)
        if not page or int(page[-1]["seq"]) >= last_seq:
            break
        after = int(page[-1]["seq"])
    log = CommittedLog(conversation_id, last_seq, {})
    for frame in frames:
        try:
            event_check(frame)
        except EventSchemaError as exc:
            log.problems.append(f"off its schema: {exc}")
        seq = int(frame["seq"])
        if seq in log.by_seq:
            log.problems.append(f"seq {seq} twice in the log")
        log.by_seq[seq] = frame
    missing = sorted(set(range(1, last_seq + 1)) - log.by_seq.keys())
    if missing:
        log.problems.append(f"seqs missing from the log: {_ranges(missing)}")
    beyond = sorted(s for s in log.by_seq if s > last_seq or s < 1)
    if beyond:
        log.problems.append(f"seqs outside 1..last_seq={last_seq}: {beyond}")
    repeated = [eid for eid, n in Counter(f.get("event_id") for f in frames).items() if n > 1]
    if repeated:
        log.problems.append(f"event_ids twice in the log: {repeated[:5]}")
    message_ids = Counter(
        f["message"]["id"] for f in frames if f.get("type") == "message" and "message" in f
    )
    twice = [mid for mid, n in message_ids.items() if n > 1]
    if twice:
        log.problems.append(f"messages twice in the log: {twice[:5]}")
    return log


def committed_logs(
    base_url: str, *, token: str, conversation_ids: Iterable[str]
) -> dict[str, CommittedLog]:
    return {
        c: committed_log(base_url, token=token, conversation_id=c)
        for c in dict.fromkeys(conversation_ids)
    }


def last_seqs(logs: Mapping[str, CommittedLog]) -> dict[str, int]:
    return {c: log.last_seq for c, log in logs.items()}


@dataclass
class Tally:
    owed: int = 0
    received: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    # Received with a seq at or below the position the socket resumed from: not owed, and a
    # client drops them by seq; counted, not failed (the contract is silent on them).
    stale: int = 0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.out_of_order or self.mismatched)

    def add(self, other: Tally) -> None:
        self.owed += other.owed
        self.received += other.received
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.out_of_order += other.out_of_order
        self.mismatched += other.mismatched
        self.stale += other.stale

    def summary(self) -> dict[str, int]:
        return {
            "owed": self.owed,
            "received": self.received,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "out_of_order": len(self.out_of_order),
            "mismatched": len(self.mismatched),
            "stale": self.stale,
        }


def socket_tally(
    record: SocketRecord,
    logs: Mapping[str, CommittedLog],
    *,
    seqs: Iterable[tuple[str, int]] | None = None,
) -> Tally:
    """How one socket did against the committed ``logs``. ``seqs`` restricts the count to
    those ``(conversation, seq)`` (the bench's per-fault windows)."""
    only = set(seqs) if seqs is not None else None
    tally = Tally()
    by_conversation: dict[str, list[Any]] = defaultdict(list)
    for item in record.received:
        by_conversation[item.conversation_id].append(item)
    for conversation_id, log in logs.items():
        if conversation_id not in record.positions:
            continue
        start = record.positions[conversation_id]
        items = by_conversation.get(conversation_id, [])
        own = record.own.get(conversation_id, set())
        seen = [i.seq for i in items]
        end = log.last_seq if record.open else max([start, *seen, *own])

        def counted(seq: int, conversation_id: str = conversation_id) -> bool:
            return only is None or (conversation_id, seq) in only

        owed = {s for s in range(start + 1, end + 1) if s not in own and counted(s)}
        tally.owed += len(owed)
        got = {s for s in seen if s > start}
        tally.received += len([s for s in seen if s > start and counted(s)])
        tally.stale += len([s for s in seen if s <= start and counted(s)])
        tally.lost += [f"{conversation_id}#{s}" for s in sorted(owed - got)]
        for seq, n in Counter(s for s in seen if s > start).items():
            if n > 1 and counted(seq):
                tally.duplicated.append(f"{conversation_id}#{seq} x{n}")
        for event_id, n in Counter(i.event_id for i in items).items():
            if n > 1:
                tally.duplicated.append(f"{conversation_id} event_id {event_id} x{n}")
        highest = max([i.seq for i in items if i.before_resume_ack], default=0)
        for item in items:
            if item.before_resume_ack:
                continue
            if item.seq <= highest and counted(item.seq):
                tally.out_of_order.append(f"{conversation_id}#{item.seq} after #{highest}")
            highest = max(highest, item.seq)
        for item in items:
            committed = log.by_seq.get(item.seq)
            if committed is None:
                tally.mismatched.append(f"{conversation_id}#{item.seq} never committed")
            elif (committed.get("event_id"), committed.get("type")) != (item.event_id, item.type):
                tally.mismatched.append(
                    f"{conversation_id}#{item.seq} {item.type}/{item.event_id}, committed "
                    f"{committed.get('type')}/{committed.get('event_id')}"
                )
    return tally


def client_lost(
    client: DeliveryClient,
    logs: Mapping[str, CommittedLog],
    *,
    seqs: Iterable[tuple[str, int]] | None = None,
) -> list[str]:
    """Committed events above the client's first position that none of its sockets held."""
    only = set(seqs) if seqs is not None else None
    held: dict[str, set[int]] = defaultdict(set)
    for record in client.sockets:
        for item in record.received:
            held[item.conversation_id].add(item.seq)
        for conversation_id, own in record.own.items():
            held[conversation_id] |= own
    lost = []
    for conversation_id, log in logs.items():
        if conversation_id not in client.start_positions:
            continue
        for seq in range(client.start_positions[conversation_id] + 1, log.last_seq + 1):
            wanted = only is None or (conversation_id, seq) in only
            if wanted and seq not in held[conversation_id]:
                lost.append(f"{conversation_id}#{seq}")
    return lost


@dataclass
class DeliveryReport:
    per_socket: dict[str, Tally]  # "<client name>/<socket index>@<instance>"
    client_lost: dict[str, list[str]]
    log_problems: dict[str, list[str]]
    unrecovered: dict[str, list[str]]  # resume acks that said recovered: false
    schema_errors: dict[str, list[str]]

    @property
    def ok(self) -> bool:
        return (
            all(t.ok for t in self.per_socket.values())
            and not any(self.client_lost.values())
            and not any(self.log_problems.values())
            and not any(self.unrecovered.values())
            and not any(self.schema_errors.values())
        )

    def total(self) -> Tally:
        total = Tally()
        for tally in self.per_socket.values():
            total.add(tally)
        return total

    def describe(self) -> str:
        lines = []
        for name, tally in self.per_socket.items():
            flag = "ok " if tally.ok else "BAD"
            line = f"{flag} {name}: {tally.summary()}"
            for kind in ("lost", "duplicated", "out_of_order", "mismatched"):
                found = getattr(tally, kind)
                if found:
                    line += f"\n      {kind}: {found[:8]}{' ...' if len(found) > 8 else ''}"
            lines.append(line)
        for name, lost in self.client_lost.items():
            if lost:
                lines.append(f"BAD {name} never held: {lost[:8]}")
        for conversation_id, problems in self.log_problems.items():
            for problem in problems:
                lines.append(f"BAD log of {conversation_id}: {problem}")
        for name, convs in self.unrecovered.items():
            if convs:
                lines.append(f"BAD {name} resumed with recovered=false for {convs}")
        for name, errors in self.schema_errors.items():
            if errors:
                lines.append(f"BAD {name} received events off their schema: {errors[:3]}")
        return "\n".join(lines)


def delivery_report(
    clients: Iterable[DeliveryClient],
    logs: Mapping[str, CommittedLog],
    *,
    seqs: Iterable[tuple[str, int]] | None = None,
) -> DeliveryReport:
    only = list(seqs) if seqs is not None else None
    per_socket: dict[str, Tally] = {}
    lost: dict[str, list[str]] = {}
    unrecovered: dict[str, list[str]] = {}
    schema_errors: dict[str, list[str]] = {}
    for client in clients:
        for record in client.sockets:
            name = f"{client.name}/{record.index}@{record.instance_id}"
            per_socket[name] = socket_tally(record, logs, seqs=only)
            schema_errors[name] = record.schema_errors
            ack = record.resume_ack or {}
            refused = [
                c
                for c, state in (ack.get("conversations") or {}).items()
                if isinstance(state, dict) and state.get("recovered") is False
            ]
            if refused:
                unrecovered[name] = refused
        lost[client.name] = client_lost(client, logs, seqs=only)
    return DeliveryReport(
        per_socket=per_socket,
        client_lost=lost,
        log_problems={c: log.problems for c, log in logs.items()},
        unrecovered=unrecovered,
        schema_errors=schema_errors,
    )


def assert_exactly_once(
    clients: Iterable[DeliveryClient], logs: Mapping[str, CommittedLog]
) -> DeliveryReport:
    """Every socket: 0 lost, 0 duplicated, in seq order; every client: everything held."""
    report = delivery_report(clients, logs)
    assert report.ok, "delivery was not exactly once:\n" + report.describe()
    return report


def _ranges(values: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    out: list[str] = []
    start = prev = values[0]
    for value in values[1:]:
        if value == prev + 1:
            prev = value
            continue
        out.append(f"{start}-{prev}" if start != prev else f"{start}")
        start = prev = value
    out.append(f"{start}-{prev}" if start != prev else f"{start}")
    return ", ".join(out)
