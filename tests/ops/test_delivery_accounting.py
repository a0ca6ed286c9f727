"""The delivery fault tests' own accounting, on made-up sockets: it must see every way a
delivery can go wrong, and nothing else."""

from __future__ import annotations

from tests.support.delivery_client import DeliveryClient, Received, SocketRecord
from tests.support.delivery_ledger import CommittedLog, delivery_report, socket_tally

CONV = "c1"


def _log(last_seq: int) -> dict[str, CommittedLog]:
    frames = {
        s: {"type": "message", "seq": s, "event_id": f"e{s}", "conversation_id": CONV}
        for s in range(1, last_seq + 1)
    }
    return {CONV: CommittedLog(CONV, last_seq, frames)}


def _socket(
    seqs: list[int],
    *,
    start: int = 0,
    open_: bool = True,
    before_ack: int = 0,
    own: set[int] | None = None,
    event_ids: dict[int, str] | None = None,
) -> SocketRecord:
    record = SocketRecord(index=0, url="ws://x", attempt_started_at=0.0, positions={CONV: start})
    for n, seq in enumerate(seqs):
        record.received.append(
            Received(
                conversation_id=CONV,
                seq=seq,
                event_id=(event_ids or {}).get(seq, f"e{seq}"),
                type="message",
                at=float(n),
                before_resume_ack=n < before_ack,
                frame={},
            )
        )
    record.own = {CONV: own or set()}
    if not open_:
        record.closed_at = 1.0
    return record


def test_everything_once_in_order_is_ok() -> None:
    tally = socket_tally(_socket([3, 4, 5], start=2), _log(5))
    assert tally.ok and tally.summary()["owed"] == 3 and tally.received == 3


def test_a_missing_event_on_an_open_socket_is_lost() -> None:
    tally = socket_tally(_socket([1, 2, 4]), _log(5))
    assert tally.lost == ["c1#3", "c1#5"]


def test_a_closed_socket_owes_only_up_to_what_it_received_but_no_hole() -> None:
    assert socket_tally(_socket([1, 2], open_=False), _log(5)).ok
    assert socket_tally(_socket([1, 3], open_=False), _log(5)).lost == ["c1#2"]


def test_repeats_by_seq_or_event_id_are_duplicates() -> None:
    assert socket_tally(_socket([1, 2, 2, 3]), _log(3)).duplicated == [
        "c1#2 x2",
        "c1 event_id e2 x2",
    ]


def test_order_is_free_only_before_the_resume_ack() -> None:
    # A live event (5) ahead of the replay (3, 4) before the ack is allowed ...
    assert socket_tally(_socket([5, 3, 4, 6], start=2, before_ack=3), _log(6)).ok
    # ... after it, nothing may go backwards.
    assert socket_tally(_socket([3, 5, 4, 6], start=2), _log(6)).out_of_order == ["c1#4 after #5"]
    tally = socket_tally(_socket([5, 3, 4], start=2, before_ack=1), _log(5))
    assert tally.out_of_order == ["c1#3 after #5", "c1#4 after #5"]


def test_own_sends_are_not_owed_and_another_event_id_is_a_mismatch() -> None:
    assert socket_tally(_socket([1, 3], own={2}), _log(3)).ok
    tally = socket_tally(_socket([1, 2], event_ids={2: "other"}), _log(2))
    assert tally.mismatched == ["c1#2 message/other, committed message/e2"]


def test_a_client_must_hold_everything_across_its_sockets() -> None:
    client = DeliveryClient(name="bob", token="t", conversations=[CONV])
    first = _socket([1, 2], open_=False)
    second = _socket([4, 5], start=2)
    second.index = 1
    client.sockets = [first, second]
    report = delivery_report([client], _log(5))
    assert report.client_lost == {"bob": ["c1#3"]}
    assert report.per_socket["bob/1@"].lost == ["c1#3"]
    assert not report.ok
