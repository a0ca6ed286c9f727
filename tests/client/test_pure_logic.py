"""The client package's pure logic, without a server: backoff, the 1013 hint, gap ordering,
frame parsing."""

from __future__ import annotations

import pytest
from realtime_client import Backoff, FrameError, Sequencer, parse_frame, retry_after_ms
from realtime_client.close_codes import (
    WS_1006_ABNORMAL_CLOSURE,
    WS_1012_SERVICE_RESTART,
    WS_1013_TRY_AGAIN_LATER,
    WS_4008_SLOW_CONSUMER,
)
from realtime_client.events import (
    Ack,
    MemberEvent,
    Message,
    MessageEvent,
    TypingEvent,
    UnknownFrame,
)
from realtime_client.outbox import Outbox

LOWEST = 0.0
HIGHEST = 0.999999


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("retry_after_ms=250", 250),
        ("retry_after_ms=1", 1),
        (" retry_after_ms=4000 ", 4000),
        ("retry_after_ms=0", None),
        ("retry_after_ms=-5", None),
        ("retry_after_ms=2.5", None),
        ("retry_after_ms=", None),
        ("retry_after=250", None),
        ("retry_after_ms=250; later", None),
        ("", None),
        (None, None),
    ],
)
def test_the_1013_hint_is_a_positive_whole_number_of_milliseconds(
    reason: str | None, expected: int | None
) -> None:
    assert retry_after_ms(reason) == expected


def test_a_1013_hint_spreads_the_retry_over_n_to_2n_milliseconds() -> None:
    backoff = Backoff()
    code, reason = WS_1013_TRY_AGAIN_LATER, "retry_after_ms=800"
    assert backoff.after_close(code, reason, 0, lambda: LOWEST) == pytest.approx(0.8)
    highest = backoff.after_close(code, reason, 0, lambda: HIGHEST)
    assert 0.8 < highest < 1.6
    # The hint wins over the attempt count, however many failures came before.
    assert backoff.after_close(code, reason, 9, lambda: LOWEST) == pytest.approx(0.8)


def test_a_1013_without_a_hint_backs_off_as_any_drop() -> None:
    backoff = Backoff(base_seconds=0.5, cap_seconds=30)
    for reason in (None, "", "busy"):
        assert backoff.after_close(WS_1013_TRY_AGAIN_LATER, reason, 3, lambda: HIGHEST) == (
            pytest.approx(backoff.full_jitter(3, lambda: HIGHEST))
        )


def test_an_upgrade_refused_with_503_is_retried_after_its_hint() -> None:
    backoff = Backoff(base_seconds=0.5, cap_seconds=30)
    # The millisecond header wins; the standard header in seconds is the fallback.
    headers = {"Retry-After": "2", "X-Retry-After-Ms": "1500"}
    assert backoff.after_refusal(headers, 0, lambda: LOWEST) == pytest.approx(1.5)
    assert 1.5 < backoff.after_refusal(headers, 0, lambda: HIGHEST) < 3.0
    assert backoff.after_refusal({"Retry-After": "2"}, 0, lambda: LOWEST) == pytest.approx(2.0)
    for bad in ({}, {"Retry-After": "soon"}, {"X-Retry-After-Ms": "0", "Retry-After": "-1"}):
        assert backoff.after_refusal(bad, 3, lambda: HIGHEST) == pytest.approx(
            backoff.full_jitter(3, lambda: HIGHEST)
        )


def test_full_jitter_grows_from_zero_to_the_cap() -> None:
    backoff = Backoff(base_seconds=0.5, cap_seconds=30)
    assert backoff.full_jitter(0, lambda: LOWEST) == 0
    assert backoff.full_jitter(0, lambda: HIGHEST) == pytest.approx(0.5, rel=1e-3)
    assert backoff.full_jitter(3, lambda: HIGHEST) == pytest.approx(4.0, rel=1e-3)
    assert backoff.full_jitter(60, lambda: HIGHEST) == pytest.approx(30, rel=1e-3)
    assert backoff.after_close(WS_1006_ABNORMAL_CLOSURE, None, 2, lambda: 0.5) == 1.0
    assert backoff.after_close(WS_4008_SLOW_CONSUMER, None, 0, lambda: 0.5) == 0.25


def test_a_draining_instance_is_left_at_once() -> None:
    backoff = Backoff(restart_jitter_seconds=0.25)
    for attempt in (0, 5, 20):
        assert backoff.after_close(WS_1012_SERVICE_RESTART, None, attempt, lambda: HIGHEST) < 0.25


def test_events_come_out_once_and_in_seq_order_whatever_order_they_arrive_in() -> None:
    seq: Sequencer[str] = Sequencer({"c": 2})
    assert seq.accept("c", 5, "e5") == []
    assert seq.accept("c", 2, "e2") == []  # at the position: already handed out
    assert seq.accept("c", 4, "e4") == []
    assert seq.gapped() == ["c"]
    assert list(seq.missing("c")) == [3]
    assert seq.accept("c", 3, "e3") == ["e3", "e4", "e5"]
    assert seq.accept("c", 4, "e4") == []  # replayed again: dropped
    assert seq.accept("c", 6, "e6") == ["e6"]
    assert seq.positions == {"c": 6}
    assert seq.gapped() == []


def test_an_own_acknowledged_seq_fills_its_place_without_being_handed_out() -> None:
    seq: Sequencer[str] = Sequencer({"c": 0})
    assert seq.accept("c", 2, "e2") == []
    assert seq.accept("c", 1, None) == ["e2"]
    assert seq.accept("c", 2, "e2") == []
    assert seq.positions == {"c": 2}


def test_the_old_name_offer_still_accepts_and_says_it_is_deprecated() -> None:
    seq: Sequencer[str] = Sequencer({"c": 0})
    with pytest.warns(DeprecationWarning, match="Sequencer.accept"):
        assert seq.offer("c", 1, "e1") == ["e1"]
    assert seq.positions == {"c": 1}


def test_a_conversation_never_heard_of_starts_at_its_first_event() -> None:
    seq: Sequencer[str] = Sequencer()
    assert seq.accept("new", 7, "added") == ["added"]
    assert seq.accept("new", 9, "e9") == []
    assert seq.advance("new", 9) == []  # caught up by other means: nothing left to hand out
    assert seq.positions == {"new": 9}
    assert seq.advance("new", 4) == []  # positions never go back
    assert seq.positions == {"new": 9}
    seq.track("new", 1)  # already followed: kept
    assert seq.positions == {"new": 9}
    seq.forget("new")
    assert seq.positions == {}


def _message(seq: int) -> dict[str, object]:
    return {
        "type": "message",
        "event_id": f"e{seq}",
        "ts": "2026-12-06T08:00:00+00:00",
        "conversation_id": "7",
        "seq": seq,
        "message": {
            "id": "m1",
            "conversation_id": "7",
            "sender_id": "1",
            "body": "hi",
            "created_at": "2026-12-06T08:00:00+00:00",
            "seq": seq,
            "client_id": None,
        },
    }


def test_each_server_frame_parses_to_its_type() -> None:
    event = parse_frame(_message(3))
    assert isinstance(event, MessageEvent)
    assert (event.seq, event.message.body, event.event_id) == (3, "hi", "e3")
    member = parse_frame(
        {
            "type": "member",
            "event_id": "x",
            "ts": "t",
            "conversation_id": "7",
            "seq": 4,
            "user_id": "3",
            "action": "removed",
            "by": "1",
        }
    )
    assert isinstance(member, MemberEvent)
    assert member.action == "removed"
    typing = parse_frame(
        {
            "type": "typing",
            "event_id": "y",
            "ts": "t",
            "conversation_id": "7",
            "user_id": "2",
            "is_typing": True,
        }
    )
    assert isinstance(typing, TypingEvent)
    assert typing.is_typing
    ack = parse_frame({"type": "ack", "ref": "r1", "message": _message(5)["message"]})
    assert isinstance(ack, Ack)
    assert ack.message is not None and ack.message.seq == 5
    unknown = parse_frame({"type": "newer", "x": 1})
    assert isinstance(unknown, UnknownFrame)
    assert unknown.data["x"] == 1


@pytest.mark.parametrize(
    "broken",
    [
        {**_message(1), "seq": "1"},
        {**_message(1), "seq": True},
        {**_message(1), "message": None},
        {
            "type": "member",
            "conversation_id": "7",
            "seq": 1,
            "user_id": "3",
            "action": "left",
            "by": "1",
        },
        {"type": "typing", "conversation_id": "7", "user_id": "2", "is_typing": "yes"},
        {"type": "connected", "connection_id": "c", "instance_id": "i", "user_id": "1"},
    ],
)
def test_a_known_frame_off_its_shape_is_refused(broken: dict[str, object]) -> None:
    with pytest.raises(FrameError):
        parse_frame(broken)


async def test_the_outbox_resends_oldest_first_until_one_answer_settles_each() -> None:
    outbox = Outbox()
    first = outbox.add("a", "7", "one")
    second = outbox.add("b", "7", "two")
    assert [e.client_id for e in outbox.unsent()] == ["a", "b"]
    outbox.sending(first, "m1")
    assert [e.client_id for e in outbox.unsent()] == ["b"]
    outbox.socket_closed()  # the ack of m1 can no longer come: both go again
    assert [e.client_id for e in outbox.unsent()] == ["a", "b"]
    assert outbox.by_ref("m1") is None
    outbox.sending(first, "m2")
    assert outbox.by_ref("m2") is first
    stored = Message.parse(_message(3)["message"])  # type: ignore[arg-type]
    outbox.settle("a", stored)
    assert await first.future == stored
    assert "a" not in outbox and len(outbox) == 1
    outbox.fail_all(RuntimeError("closed"))
    assert len(outbox) == 0
    with pytest.raises(RuntimeError):
        await second.future
