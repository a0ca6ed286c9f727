"""The body of a call: events spliced from their stored text are the JSON a receiver parses."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from webhooks.delivery import event_json
from webhooks.signing import batch_body, signature, signature_valid


def test_a_body_carries_each_event_with_its_name_id_and_payload():
    first, second = uuid.uuid4(), uuid.uuid4()
    events = [
        # PostgreSQL renders jsonb with spaces; SQLite keeps the text as written.
        event_json("member.added", first, '{"by": "1", "seq": 2, "user_id": "7"}'),
        event_json("user.online", second, '{"at":"2026-12-06T08:00:00+00:00","user_id":"7"}'),
        event_json("odd", second, "{}"),
    ]
    at = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
    body = batch_body(batch_id="b-1", at=at, events=events)
    assert json.loads(body) == {
        "id": "b-1",
        "time": "2026-12-06T08:00:00+00:00",
        "events": [
            {"name": "member.added", "id": str(first), "by": "1", "seq": 2, "user_id": "7"},
            {
                "name": "user.online",
                "id": str(second),
                "at": "2026-12-06T08:00:00+00:00",
                "user_id": "7",
            },
            {"name": "odd", "id": str(second)},
        ],
    }


def test_the_signature_is_over_the_exact_bytes():
    body = batch_body(batch_id="b", at=datetime.now(UTC), events=[])
    header = signature(body=body, secret="k")
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert signature_valid(body=body, secret="k", header=header)
    assert not signature_valid(body=body + b" ", secret="k", header=header)
    assert not signature_valid(body=body, secret="other", header=header)
